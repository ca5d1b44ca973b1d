package controller

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"jobsuite/api"
)

// The OpenAPI document (openapi.json) is checked against the code: the
// routes are read from the source with go/parser, so a new route cannot
// be left out; the documented paths are requested from the real router,
// so a stale one is noticed; query parameters and status codes are read
// from each handler and the helpers it calls; schemas are compared with
// the JSON fields of the Go types they describe.

// openAPIDoc is the part of an OpenAPI 3.0 document the tests read.
type openAPIDoc struct {
	OpenAPI string `json:"openapi"`
	Info    struct {
		Title       string `json:"title"`
		Version     string `json:"version"`
		Description string `json:"description"`
	} `json:"info"`
	Paths      map[string]map[string]json.RawMessage `json:"paths"`
	Components struct {
		Schemas    map[string]openAPISchema   `json:"schemas"`
		Parameters map[string]openAPIParam    `json:"parameters"`
		Responses  map[string]json.RawMessage `json:"responses"`
	} `json:"components"`
}

type openAPIOp struct {
	OperationID  string                     `json:"operationId"`
	Summary      string                     `json:"summary"`
	RequiredRole string                     `json:"x-required-role"`
	Parameters   []openAPIParam             `json:"parameters"`
	RequestBody  json.RawMessage            `json:"requestBody"`
	Responses    map[string]json.RawMessage `json:"responses"`
}

type openAPIParam struct {
	Ref      string `json:"$ref"`
	Name     string `json:"name"`
	In       string `json:"in"`
	Required bool   `json:"required"`
}

type openAPISchema struct {
	Properties map[string]json.RawMessage `json:"properties"`
	Required   []string                   `json:"required"`
}

var httpMethods = map[string]bool{"GET": true, "HEAD": true, "POST": true, "PUT": true, "PATCH": true, "DELETE": true, "OPTIONS": true}

func loadOpenAPI(t *testing.T) openAPIDoc {
	t.Helper()
	var doc openAPIDoc
	dec := json.NewDecoder(strings.NewReader(string(openAPI)))
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("openapi.json does not parse: %v", err)
	}
	if doc.OpenAPI != "3.0.3" || doc.Info.Title == "" || doc.Info.Version == "" {
		t.Fatalf("openapi.json: openapi %q, title %q, version %q", doc.OpenAPI, doc.Info.Title, doc.Info.Version)
	}
	return doc
}

// operations returns the operations of the document keyed "METHOD /path",
// with the path-level parameters added to each.
func (d openAPIDoc) operations(t *testing.T) map[string]openAPIOp {
	t.Helper()
	ops := map[string]openAPIOp{}
	for path, item := range d.Paths {
		var common []openAPIParam
		if raw, ok := item["parameters"]; ok {
			if err := json.Unmarshal(raw, &common); err != nil {
				t.Fatalf("%s parameters: %v", path, err)
			}
		}
		for method, raw := range item {
			if method == "parameters" || method == "summary" || method == "description" || method == "servers" {
				continue
			}
			if !httpMethods[strings.ToUpper(method)] {
				t.Errorf("%s: %q is not an HTTP method", path, method)
				continue
			}
			var op openAPIOp
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			op.Parameters = append(append([]openAPIParam(nil), common...), op.Parameters...)
			for i, p := range op.Parameters {
				if p.Ref != "" {
					name := strings.TrimPrefix(p.Ref, "#/components/parameters/")
					cp, ok := d.Components.Parameters[name]
					if !ok {
						t.Errorf("%s %s: parameter %s does not resolve", method, path, p.Ref)
					}
					op.Parameters[i] = cp
				}
			}
			ops[strings.ToUpper(method)+" "+path] = op
		}
	}
	return ops
}

// sourceRoute is a route registered in the controller's source.
type sourceRoute struct {
	method, path string // path in OpenAPI form: /jobs/{id}
	role         string // operator, viewer or none (no s.auth)
	handler      string // name of the handler function or method
	pos          string
}

// openAPIPath turns an httprouter path into an OpenAPI one:
// /jobs/:id → /jobs/{id}, /ui/*file → /ui/{file}.
func openAPIPath(p string) string {
	return regexp.MustCompile(`[:*]([A-Za-z0-9_]+)`).ReplaceAllString(p, "{$1}")
}

// controllerSource parses the package's non-test Go files.
func controllerSource(t *testing.T) (*token.FileSet, []*ast.File) {
	t.Helper()
	fset := token.NewFileSet()
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	return fset, files
}

// routesFromSource finds every route registration of the httprouter
// API: r.GET("/path", h) and the other method helpers,
// r.Handle/Handler/HandlerFunc("METHOD", "/path", h) and
// r.ServeFiles("/path/*file", fs). A route whose method or path is not
// a string literal is an error: this test could not see it.
func routesFromSource(t *testing.T, fset *token.FileSet, files []*ast.File) []sourceRoute {
	t.Helper()
	lit := func(e ast.Expr) (string, bool) {
		bl, ok := e.(*ast.BasicLit)
		if !ok || bl.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(bl.Value)
		return s, err == nil
	}
	var routes []sourceRoute
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			pos := fset.Position(call.Pos()).String()
			var method, path string
			var handler ast.Expr
			switch name := sel.Sel.Name; {
			case httpMethods[name] && len(call.Args) == 2:
				p, ok := lit(call.Args[0])
				if !ok {
					t.Errorf("%s: route %s with a path that is not a string literal; write it as one so the OpenAPI test sees it", pos, name)
					return true
				}
				method, path, handler = name, p, call.Args[1]
			case (name == "Handle" || name == "Handler" || name == "HandlerFunc") && len(call.Args) == 3:
				m, mok := lit(call.Args[0])
				p, pok := lit(call.Args[1])
				if !mok && !pok {
					return true // not an httprouter registration
				}
				if !mok || !pok || !httpMethods[m] {
					t.Errorf("%s: route %s with a method or path that is not a string literal", pos, name)
					return true
				}
				method, path, handler = m, p, call.Args[2]
			case name == "ServeFiles" && len(call.Args) == 2:
				p, ok := lit(call.Args[0])
				if !ok {
					t.Errorf("%s: ServeFiles with a path that is not a string literal", pos)
					return true
				}
				method, path = "GET", p
			default:
				return true
			}
			if !strings.HasPrefix(path, "/") {
				return true
			}
			r := sourceRoute{method: method, path: openAPIPath(path), role: "none", pos: pos}
			if c, ok := handler.(*ast.CallExpr); ok {
				if s, ok := c.Fun.(*ast.SelectorExpr); ok && s.Sel.Name == "auth" && len(c.Args) == 2 {
					if role, ok := c.Args[0].(*ast.SelectorExpr); ok {
						r.role = strings.ToLower(strings.TrimPrefix(role.Sel.Name, "Role"))
					}
					handler = c.Args[1]
				}
			}
			switch h := handler.(type) {
			case *ast.SelectorExpr:
				r.handler = h.Sel.Name
			case *ast.Ident:
				r.handler = h.Name
			}
			routes = append(routes, r)
			return true
		})
	}
	if len(routes) == 0 {
		t.Fatal("found no routes in the controller's source")
	}
	return routes
}

// routeTable parses the routes once per test.
func routeTable(t *testing.T) ([]sourceRoute, map[string]*ast.FuncDecl) {
	t.Helper()
	fset, files := controllerSource(t)
	funcs := map[string]*ast.FuncDecl{}
	for _, f := range files {
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Body != nil {
				name := fd.Name.Name
				if _, dup := funcs[name]; !dup {
					funcs[name] = fd
				}
			}
		}
	}
	return routesFromSource(t, fset, files), funcs
}

func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	doc := loadOpenAPI(t)
	ops := doc.operations(t)
	routes, _ := routeTable(t)
	seen := map[string]bool{}
	for _, r := range routes {
		key := r.method + " " + r.path
		if seen[key] {
			t.Errorf("%s: %s registered twice", r.pos, key)
		}
		seen[key] = true
		op, ok := ops[key]
		if !ok {
			t.Errorf("%s: route %s is not described in controller/openapi.json", r.pos, key)
			continue
		}
		if op.RequiredRole != r.role {
			t.Errorf("%s: x-required-role is %q, but the route needs %q", key, op.RequiredRole, r.role)
		}
		if r.role != "none" {
			for _, code := range []string{"401", "403"} {
				if _, ok := op.Responses[code]; !ok {
					t.Errorf("%s needs a certificate role but does not describe %s", key, code)
				}
			}
		}
	}
	for key := range ops {
		if !seen[key] {
			t.Errorf("openapi.json describes %s, which no route in the source registers", key)
		}
	}
}

// TestOpenAPIPathsExistInRouter requests every documented operation from
// the real router: none may be an unknown path (404 "no such endpoint")
// or an unknown method (405).
func TestOpenAPIPathsExistInRouter(t *testing.T) {
	doc := loadOpenAPI(t)
	s := &Server{log: hclog.NewNullLogger()}
	h := s.routes()
	for key := range doc.operations(t) {
		method, path, _ := strings.Cut(key, " ")
		url := regexp.MustCompile(`\{[^}]+\}`).ReplaceAllString(path, "1")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, url, nil))
		body := rec.Body.String()
		switch {
		case rec.Code == http.StatusMethodNotAllowed:
			t.Errorf("%s: the router does not serve this method (%s)", key, strings.TrimSpace(body))
		case rec.Code == http.StatusNotFound && strings.Contains(body, "no such endpoint"):
			t.Errorf("%s: the router has no such path", key)
		}
	}
	// And an undocumented path is indeed unknown to the router.
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/no/such/path", nil))
	if rec.Code != http.StatusNotFound || !strings.Contains(rec.Body.String(), "no such endpoint") {
		t.Fatalf("unknown path: %d %s; the check above cannot tell paths apart", rec.Code, rec.Body)
	}
}

func TestOpenAPIServed(t *testing.T) {
	s := &Server{log: hclog.NewNullLogger()}
	srv := httptest.NewServer(s.routes())
	defer srv.Close()
	for _, path := range []string{"/openapi.json", "/openapi.json/"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Fatalf("GET %s: %d %q", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if string(body) != string(openAPI) {
			t.Errorf("GET %s does not serve openapi.json", path)
		}
		var v map[string]any
		if err := json.Unmarshal(body, &v); err != nil {
			t.Errorf("GET %s: %v", path, err)
		}
	}
	// The file on disk is what is embedded.
	onDisk, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if string(onDisk) != string(openAPI) {
		t.Error("openapi.json differs from the embedded copy; rebuild")
	}
}

// handlerFacts walks a handler and the package functions it calls and
// collects the query parameters it reads (q.Get("x"), q["x"],
// r.URL.Query().Get("x")) and the HTTP status constants it writes.
func handlerFacts(name string, funcs map[string]*ast.FuncDecl) (params, statuses map[string]bool) {
	params, statuses = map[string]bool{}, map[string]bool{}
	visited := map[string]bool{}
	isQuery := func(e ast.Expr) bool {
		switch x := e.(type) {
		case *ast.Ident:
			return x.Name == "q"
		case *ast.CallExpr:
			s, ok := x.Fun.(*ast.SelectorExpr)
			return ok && s.Sel.Name == "Query"
		}
		return false
	}
	var walk func(string)
	walk = func(name string) {
		fd := funcs[name]
		if fd == nil || visited[name] {
			return
		}
		visited[name] = true
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			switch x := n.(type) {
			case *ast.CallExpr:
				switch f := x.Fun.(type) {
				case *ast.Ident:
					walk(f.Name)
				case *ast.SelectorExpr:
					if f.Sel.Name == "Get" && isQuery(f.X) && len(x.Args) == 1 {
						if bl, ok := x.Args[0].(*ast.BasicLit); ok {
							p, _ := strconv.Unquote(bl.Value)
							params[p] = true
						}
					}
					if id, ok := f.X.(*ast.Ident); ok && id.Name == "s" {
						walk(f.Sel.Name) // a method of Server
					}
				}
			case *ast.IndexExpr:
				if bl, ok := x.Index.(*ast.BasicLit); ok && isQuery(x.X) && bl.Kind == token.STRING {
					p, _ := strconv.Unquote(bl.Value)
					params[p] = true
				}
			case *ast.SelectorExpr:
				if id, ok := x.X.(*ast.Ident); ok && id.Name == "http" && strings.HasPrefix(x.Sel.Name, "Status") && x.Sel.Name != "StatusText" {
					statuses[x.Sel.Name] = true
				}
			}
			return true
		})
	}
	walk(name)
	return params, statuses
}

// statusCodes maps the net/http constants the handlers use to codes.
var statusCodes = map[string]string{
	"StatusOK": "200", "StatusCreated": "201", "StatusAccepted": "202", "StatusNoContent": "204",
	"StatusSwitchingProtocols": "101",
	"StatusBadRequest":         "400", "StatusUnauthorized": "401", "StatusForbidden": "403", "StatusNotFound": "404",
	"StatusMethodNotAllowed": "405", "StatusConflict": "409", "StatusRequestEntityTooLarge": "413", "StatusNotImplemented": "501",
	"StatusTooManyRequests": "429", "StatusInternalServerError": "500", "StatusServiceUnavailable": "503",
	"StatusInsufficientStorage": "507",
}

// staleOps are the operations a cluster node answers from its own
// store with ?stale=1 (node_stale.go reads the parameter).
var staleOps = map[string]bool{"GET /jobs": true, "GET /jobs/{id}": true, "GET /jobs/{id}/logs": true}

// TestOpenAPIParametersAndStatuses checks each operation's query
// parameters and status codes against what its handler reads and writes.
func TestOpenAPIParametersAndStatuses(t *testing.T) {
	doc := loadOpenAPI(t)
	ops := doc.operations(t)
	routes, funcs := routeTable(t)
	for _, r := range routes {
		key := r.method + " " + r.path
		op, ok := ops[key]
		if !ok || r.handler == "" || funcs[r.handler] == nil {
			continue // reported by TestOpenAPIDescribesEveryRoute, or not a function of ours
		}
		params, statuses := handlerFacts(r.handler, funcs)

		documented := map[string]bool{}
		for _, p := range op.Parameters {
			switch p.In {
			case "query":
				documented[p.Name] = true
			case "path":
				if !strings.Contains(r.path, "{"+p.Name+"}") || !p.Required {
					t.Errorf("%s: path parameter %q is not in the path or not required", key, p.Name)
				}
			}
		}
		for _, name := range regexp.MustCompile(`\{([^}]+)\}`).FindAllStringSubmatch(r.path, -1) {
			found := false
			for _, p := range op.Parameters {
				found = found || p.In == "path" && p.Name == name[1]
			}
			if !found {
				t.Errorf("%s: path parameter %q is not described", key, name[1])
			}
		}
		for p := range params {
			if !documented[p] {
				t.Errorf("%s: %s reads query parameter %q, which openapi.json does not describe", key, r.handler, p)
			}
		}
		for p := range documented {
			if p == "stale" && staleOps[key] {
				continue // read by a cluster node before the handler (node_stale.go)
			}
			if !params[p] {
				t.Errorf("%s: openapi.json describes query parameter %q, which %s does not read", key, p, r.handler)
			}
		}
		for name := range statuses {
			code, ok := statusCodes[name]
			if !ok {
				t.Errorf("%s: %s writes http.%s; add it to statusCodes in this test", key, r.handler, name)
				continue
			}
			if code == "500" {
				continue // an internal error is not part of the contract
			}
			if _, ok := op.Responses[code]; !ok {
				t.Errorf("%s: %s may answer %s (http.%s), which openapi.json does not describe", key, r.handler, code, name)
			}
		}
	}
}

// TestOpenAPISchemasMatchTypes compares the properties of each schema
// with the JSON fields of the Go type it describes, and checks that
// every $ref resolves.
func TestOpenAPISchemasMatchTypes(t *testing.T) {
	doc := loadOpenAPI(t)
	types := map[string]reflect.Type{
		"SubmitRequest": reflect.TypeFor[api.SubmitRequest](),
		"JobView":       reflect.TypeFor[api.JobView](),
		"AttemptView":   reflect.TypeFor[api.AttemptView](),
		"ResultView":    reflect.TypeFor[api.ResultView](),
		"LiveView":      reflect.TypeFor[api.LiveView](),
		"AgentInfo":     reflect.TypeFor[api.AgentInfo](),
		"Event":         reflect.TypeFor[api.Event](),
		"LogMessage":    reflect.TypeFor[api.LogMessage](),
		"Error":         reflect.TypeFor[api.Error](),

		// The fleet routes (stats.go, fleet.go, resubmit.go).
		"StatsView":       reflect.TypeFor[api.StatsView](),
		"AgentStats":      reflect.TypeFor[api.AgentStats](),
		"StatsSample":     reflect.TypeFor[api.StatsSample](),
		"WhoAmI":          reflect.TypeFor[api.WhoAmI](),
		"ResubmitRequest": reflect.TypeFor[api.ResubmitRequest](),

		// Schedules (schedules.go).
		"ScheduleRequest": reflect.TypeFor[api.ScheduleRequest](),
		"ScheduleView":    reflect.TypeFor[api.ScheduleView](),
		"ScheduleRun":     reflect.TypeFor[api.ScheduleRun](),
	}
	for name, typ := range types {
		schema, ok := doc.Components.Schemas[name]
		if !ok {
			t.Errorf("openapi.json has no schema %s (for %s)", name, typ)
			continue
		}
		fields := map[string]bool{}
		for i := range typ.NumField() {
			f := typ.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !f.IsExported() || tag == "-" {
				continue
			}
			if tag == "" {
				tag = f.Name
			}
			fields[tag] = true
			if _, ok := schema.Properties[tag]; !ok {
				t.Errorf("schema %s has no property %q (field %s.%s)", name, tag, typ, f.Name)
			}
		}
		for p := range schema.Properties {
			if !fields[p] {
				t.Errorf("schema %s has property %q, which %s does not have", name, p, typ)
			}
		}
		for _, r := range schema.Required {
			if !fields[r] {
				t.Errorf("schema %s requires %q, which %s does not have", name, r, typ)
			}
		}
	}

	// Every $ref points at something.
	var all any
	if err := json.Unmarshal(openAPI, &all); err != nil {
		t.Fatal(err)
	}
	var refs []string
	var collect func(v any)
	collect = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if s, ok := e.(string); ok && k == "$ref" {
					refs = append(refs, s)
				}
				collect(e)
			}
		case []any:
			for _, e := range x {
				collect(e)
			}
		}
	}
	collect(all)
	sort.Strings(refs)
	for _, ref := range refs {
		var cur any = all
		for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			m, ok := cur.(map[string]any)
			if !ok {
				cur = nil
				break
			}
			cur = m[part]
		}
		if cur == nil {
			t.Errorf("$ref %s does not resolve", ref)
		}
	}

	// Operation IDs are unique, and every operation has a summary.
	ids := map[string]string{}
	for key, op := range doc.operations(t) {
		if op.OperationID == "" || op.Summary == "" {
			t.Errorf("%s has no operationId or summary", key)
		}
		if prev, dup := ids[op.OperationID]; dup {
			t.Errorf("operationId %q used by %s and %s", op.OperationID, prev, key)
		}
		ids[op.OperationID] = key
	}
	if !strings.Contains(doc.Info.Description, "mutual TLS") {
		t.Error("info.description does not explain the mutual TLS security")
	}
}
