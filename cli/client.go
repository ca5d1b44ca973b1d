package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"jobsuite/api"
	"jobsuite/certs"
)

// Environment variables naming the controller and the TLS files. When
// none of them is set, the CLI reads devEnvFile, written by 'jobsuite dev'.
const (
	envAddr       = "JOBSUITE_ADDR"
	envCACert     = "JOBSUITE_CACERT"
	envClientCert = "JOBSUITE_CLIENT_CERT"
	envClientKey  = "JOBSUITE_CLIENT_KEY"
	envToken      = "JOBSUITE_TOKEN" // an API token, instead of (or besides) a certificate
)

// devEnvFile is where 'jobsuite dev' writes the settings of its
// controller, relative to the current directory.
var devEnvFile = filepath.Join(".jobsuite-dev", "env")

// Limits on what the CLI reads from the controller.
const (
	maxResponseBytes = 64 << 20
	maxWSMessage     = 8 << 20
	requestTimeout   = 60 * time.Second
)

// clientOptionsHelp documents the flags clientFlags registers; every
// client command's help ends with it.
const clientOptionsHelp = `
Connection options:

  -addr=<host:port>
    The controller's API address, host:port or https://host:port; for a
    cluster, several separated by commas (a:8443,b:8443,c:8443): the CLI
    uses the first that answers. Default: $JOBSUITE_ADDR.

  -retry-timeout=<duration>
    How long a request keeps trying while the controllers answer 503
    with Retry-After (no leader right now) or a proxy answers 502 or 504:
    the CLI tries the next address, waits as told, and gives up after
    this long in all. Reads, deletes and submits (which always carry an
    idempotency key) are retried; other changes are not, since they may
    have been made. An address that refuses the connection is skipped at
    once for any request: nothing was sent to it. 0: each address once.
    Default: 30s.

  -ca-cert=<path>
    The CA certificate (ca.pem) the controller's certificate is checked
    against. Default: $JOBSUITE_CACERT.

  -client-cert=<path>
    Your operator (or viewer) certificate. Default: $JOBSUITE_CLIENT_CERT.

  -client-key=<path>
    The key of -client-cert. Default: $JOBSUITE_CLIENT_KEY.

  -token=<jst_...>
    An API token ('jobsuite token create') to send instead of a client
    certificate, as 'Authorization: Bearer'. Prefer $JOBSUITE_TOKEN: a
    flag is visible to other users in the process list.

  When none of the JOBSUITE_* variables is set, the settings come from
  .jobsuite-dev/env in the current directory, written by 'jobsuite dev'.`

// clientFlags are the connection flags shared by every client command.
type clientFlags struct {
	addr, caCert, clientCert, clientKey, token string
	retry                                      time.Duration
}

// defaultRetry is how long a request keeps retrying (-retry-timeout).
const defaultRetry = 30 * time.Second

// register adds the connection flags to fs.
func (f *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.addr, "addr", "", "")
	fs.DurationVar(&f.retry, "retry-timeout", defaultRetry, "")
	fs.StringVar(&f.caCert, "ca-cert", "", "")
	fs.StringVar(&f.clientCert, "client-cert", "", "")
	fs.StringVar(&f.clientKey, "client-key", "", "")
	fs.StringVar(&f.token, "token", "", "")
}

// settings is where the controller is and which files prove who we are.
type settings struct {
	Addr, CA, Cert, Key string
	Token               string // API token; from -token or JOBSUITE_TOKEN only
	// devSkipped, when .jobsuite-dev/env exists but was not read because
	// JOBSUITE_* variables are set, names them, for the errors about a
	// missing setting.
	devSkipped string
}

// resolveSettings picks each setting from the flags, else from the
// environment, else — only when no JOBSUITE_* variable is set — from
// .jobsuite-dev/env in the current directory.
func resolveSettings(f *clientFlags) (settings, error) {
	if f == nil {
		f = &clientFlags{}
	}
	s := settings{Addr: f.addr, CA: f.caCert, Cert: f.clientCert, Key: f.clientKey, Token: f.token}
	if s.Token == "" {
		s.Token = os.Getenv(envToken)
	}
	env := map[string]string{}
	for _, k := range []string{envAddr, envCACert, envClientCert, envClientKey} {
		if v := os.Getenv(k); v != "" {
			env[k] = v
		}
	}
	if len(env) == 0 {
		dev, err := readDevEnv(devEnvFile)
		if err != nil {
			return settings{}, err
		}
		env = dev
	} else if _, err := os.Stat(devEnvFile); err == nil {
		names := make([]string, 0, len(env))
		for _, k := range []string{envAddr, envCACert, envClientCert, envClientKey} {
			if env[k] != "" {
				names = append(names, k)
			}
		}
		s.devSkipped = strings.Join(names, ", ")
	}
	for _, p := range []struct {
		dst *string
		key string
	}{{&s.Addr, envAddr}, {&s.CA, envCACert}, {&s.Cert, envClientCert}, {&s.Key, envClientKey}} {
		if *p.dst == "" {
			*p.dst = env[p.key]
		}
	}
	return s, nil
}

// readDevEnv reads the "export KEY=VALUE" lines of the env file written
// by 'jobsuite dev'. A missing file is no error. Relative certificate
// paths are made relative to the folder holding .jobsuite-dev.
func readDevEnv(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	env, err := parseEnvFile(data)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w; delete it or run 'jobsuite dev' again", path, err)
	}
	base, err := filepath.Abs(filepath.Dir(filepath.Dir(path)))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	for _, k := range []string{envCACert, envClientCert, envClientKey} {
		if v := env[k]; v != "" && !filepath.IsAbs(v) {
			env[k] = filepath.Join(base, v)
		}
	}
	return env, nil
}

// parseEnvFile parses shell assignment lines, "export KEY=VALUE" or
// "KEY=VALUE", where VALUE may be in single or double quotes. Blank
// lines and lines starting with # are skipped.
func parseEnvFile(data []byte) (map[string]string, error) {
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimSpace(strings.TrimPrefix(line, "export "))
		key, val, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		if !ok || key == "" || strings.ContainsAny(key, " \t") {
			return nil, fmt.Errorf("line %d is not KEY=VALUE", n)
		}
		val, err := unquote(strings.TrimSpace(val))
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		env[key] = val
	}
	return env, sc.Err()
}

// unquote removes one level of shell quoting: single quotes (the text
// taken as is, a quote written as close-quote, backslash-quote, open-quote)
// or double quotes (with backslash escapes of " \ $ and `).
func unquote(v string) (string, error) {
	if v == "" {
		return "", nil
	}
	switch v[0] {
	case '\'':
		if len(v) < 2 || v[len(v)-1] != '\'' {
			return "", errors.New("unterminated single quote")
		}
		return strings.ReplaceAll(v[1:len(v)-1], `'\''`, "'"), nil
	case '"':
		if len(v) < 2 || v[len(v)-1] != '"' {
			return "", errors.New("unterminated double quote")
		}
		var b strings.Builder
		in := v[1 : len(v)-1]
		for i := 0; i < len(in); i++ {
			if in[i] == '\\' && i+1 < len(in) && strings.IndexByte("\"\\$`", in[i+1]) >= 0 {
				i++
			}
			b.WriteByte(in[i])
		}
		return b.String(), nil
	}
	return v, nil
}

// normalizeAddr turns host:port or https://host:port into the base URL
// of the API. Plain http is refused: the controller requires mutual TLS.
func normalizeAddr(addr string) (*url.URL, error) {
	addr = strings.TrimSpace(addr)
	lower := strings.ToLower(addr)
	switch {
	case strings.HasPrefix(lower, "http://"):
		return nil, fmt.Errorf("controller address %q uses http://, but the controller only speaks HTTPS with mutual TLS: use https://%s", addr, addr[len("http://"):])
	case !strings.Contains(addr, "://"):
		addr = "https://" + addr
	case !strings.HasPrefix(lower, "https://"):
		return nil, fmt.Errorf("controller address %q: want host:port or https://host:port", addr)
	}
	u, err := url.Parse(addr)
	if err != nil {
		return nil, fmt.Errorf("controller address %q: %v; want host:port or https://host:port", addr, err)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("controller address %q has no host; want host:port or https://host:port", addr)
	}
	u.Scheme = "https"
	u.Path = strings.TrimRight(u.Path, "/")
	if u.Path == "/ui" || strings.HasPrefix(u.Path, "/ui/") {
		return nil, fmt.Errorf("controller address %q is the web dashboard's, not the API's: use https://%s", addr, u.Host)
	}
	u.RawQuery, u.Fragment, u.User = "", "", nil
	return u, nil
}

// normalizeAddrs splits a comma-separated list of controller addresses
// and normalizes each (normalizeAddr).
func normalizeAddrs(list string) ([]*url.URL, error) {
	var out []*url.URL
	for _, a := range strings.Split(list, ",") {
		if strings.TrimSpace(a) == "" {
			continue
		}
		u, err := normalizeAddr(a)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("controller address %q: want host:port or https://host:port, or several separated by commas", list)
	}
	return out, nil
}

// Client talks to the controller's HTTP API over mutual TLS. It knows
// one controller address or several (a cluster), and sends each request
// to the one that answered last, moving on to the next as retry.go
// says.
type Client struct {
	base  *url.URL   // the first address, for messages and derived addresses
	addrs []*url.URL // every address, base first
	http  *http.Client
	tls   *tls.Config
	token string // API token sent as a bearer, if any

	// retryFor bounds how long one request keeps retrying (retry.go);
	// 0: every address once, no waits.
	retryFor time.Duration
	// now and sleep are the clock of the retries; tests replace them.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error

	mu sync.Mutex
	at int // index in addrs of the address to try first
}

// newClient resolves the connection settings (flags, environment,
// .jobsuite-dev/env) and loads the certificates.
func newClient(m Meta, f *clientFlags) (*Client, error) {
	s, err := resolveSettings(f)
	if err != nil {
		return nil, err
	}
	missing := func(msg string) error {
		if s.devSkipped != "" {
			// One variable set turns the dev file off: say so.
			msg += fmt.Sprintf(" (%s is set, so %s is not read: set the other JOBSUITE_* variables too, or unset it to use the 'jobsuite dev' controller)", s.devSkipped, devEnvFile)
		}
		return errors.New(msg)
	}
	if s.Addr == "" {
		return nil, missing("no controller address: set JOBSUITE_ADDR or run 'jobsuite dev' in this folder (see 'jobsuite submit -h')")
	}
	addrs, err := normalizeAddrs(s.Addr)
	if err != nil {
		return nil, err
	}
	retry := defaultRetry
	if f != nil {
		retry = max(f.retry, 0)
	}
	build := func(pool *x509.CertPool, cert tls.Certificate) *Client {
		c := newClientAddrs(addrs, pool, cert)
		c.retryFor = retry
		return c
	}
	if s.Token != "" {
		if !strings.HasPrefix(s.Token, tokenPrefix) {
			return nil, fmt.Errorf("the API token (JOBSUITE_TOKEN or -token) does not start with %q; use a token printed by 'jobsuite token create'", tokenPrefix)
		}
		if s.CA == "" {
			return nil, missing("no CA certificate: set JOBSUITE_CACERT or -ca-cert to the ca.pem of the controller's PKI (a token needs it too, to check the controller)")
		}
		if s.Cert == "" && s.Key == "" { // a token alone
			pool, err := certs.LoadPool(s.CA)
			if err != nil {
				return nil, err
			}
			c := build(pool, tls.Certificate{})
			c.useToken(s.Token)
			return c, nil
		}
	}
	switch {
	case s.CA == "":
		return nil, missing("no CA certificate: set JOBSUITE_CACERT or -ca-cert to the ca.pem of the controller's PKI")
	case s.Cert == "":
		return nil, missing("no client certificate: set JOBSUITE_CLIENT_CERT or -client-cert to your operator certificate (issue one with 'jobsuite tls cert create -role operator'), or JOBSUITE_TOKEN to an API token")
	case s.Key == "":
		return nil, missing("no client key: set JOBSUITE_CLIENT_KEY or -client-key to the key of your certificate")
	}
	pool, cert, err := certs.Files{CA: s.CA, Cert: s.Cert, Key: s.Key}.Load()
	if err != nil {
		return nil, err
	}
	if err := checkValidity(s.Cert, cert.Leaf, time.Now()); err != nil {
		return nil, err
	}
	c := build(pool, cert)
	c.useToken(s.Token)
	return c, nil
}

// checkValidity names an expired (or not yet valid) client certificate
// before the handshake, which would only say "bad certificate".
func checkValidity(path string, leaf *x509.Certificate, now time.Time) error {
	if leaf == nil {
		return nil
	}
	const reissue = "issue a new one with 'jobsuite tls cert create -role operator -name NAME' (or use an API token, JOBSUITE_TOKEN)"
	switch {
	case now.After(leaf.NotAfter):
		return fmt.Errorf("your client certificate %s (%q) expired at %s; %s", path, leaf.Subject.CommonName, leaf.NotAfter.UTC().Format(time.RFC3339), reissue)
	case now.Before(leaf.NotBefore):
		return fmt.Errorf("your client certificate %s (%q) is not valid before %s: check this machine's clock, or %s", path, leaf.Subject.CommonName, leaf.NotBefore.UTC().Format(time.RFC3339), reissue)
	}
	return nil
}

// newClientTLS returns a client of the controller at base that does not
// retry.
func newClientTLS(base *url.URL, pool *x509.CertPool, cert tls.Certificate) *Client {
	return newClientAddrs([]*url.URL{base}, pool, cert)
}

// newClientAddrs returns a client of the controllers at addrs (at least
// one) that does not retry: set retryFor for that.
func newClientAddrs(addrs []*url.URL, pool *x509.CertPool, cert tls.Certificate) *Client {
	// No fixed server name: each connection checks the certificate
	// against the host it dials (net/http and the WebSocket dialer fill
	// it in), so the controllers of a cluster may have names of their own.
	// HTTP/2 when the controller offers it (its API does since issue
	// 16): a command that sends many requests (list pages, follow, waits)
	// shares one connection. WebSockets ask for http/1.1 alone
	// (websocketAt).
	cfg := certs.ClientTLS(pool, cert, "", "h2", "http/1.1")
	tr := &http.Transport{
		Proxy:             http.ProxyFromEnvironment,
		ForceAttemptHTTP2: true, // a TLSClientConfig of our own turns it off otherwise
		// A copy: the transport writes to its configuration when it sets
		// HTTP/2 up, while websocketAt clones c.tls.
		TLSClientConfig:     cfg.Clone(),
		TLSHandshakeTimeout: 15 * time.Second,
		IdleConnTimeout:     30 * time.Second,
	}
	return &Client{
		base: addrs[0], addrs: addrs, tls: cfg, http: &http.Client{Transport: tr, Timeout: requestTimeout},
		now: time.Now, sleep: sleepCtx,
	}
}

// close releases idle connections.
func (c *Client) close() { c.http.CloseIdleConnections() }

// APIError is an error answer of the controller.
type APIError struct {
	Status    int    // HTTP status
	Message   string // the server's "error"
	Field     string // the request field at fault, if any
	JobStatus string // the job's state, for 409 answers
}

func (e *APIError) Error() string {
	if e.Message != "" {
		return e.Message
	}
	return fmt.Sprintf("the controller answered %d %s", e.Status, http.StatusText(e.Status))
}

// apiError builds an *APIError from an error answer's body.
func apiError(status int, body []byte) *APIError {
	// A field of the wrong type (say, job_id as a string, from some
	// other server) is skipped, not the answer: Unmarshal fills in the
	// rest and the message still reaches the user.
	var b api.Error
	e := &APIError{Status: status}
	err := json.Unmarshal(body, &b)
	var typeErr *json.UnmarshalTypeError
	if (err == nil || errors.As(err, &typeErr)) && b.Error != "" {
		e.Message, e.Field, e.JobStatus = b.Error, b.Field, b.Status
		return e
	}
	if text := strings.TrimSpace(string(body)); text != "" && len(text) < 512 {
		e.Message = fmt.Sprintf("the controller answered %d %s: %s", status, http.StatusText(status), text)
	}
	return e
}

// do sends a request with body (if not nil) as JSON and decodes a 2xx
// answer into out (if not nil; a *json.RawMessage keeps it as is).
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	_, err := c.request(ctx, method, path, body, out)
	return err
}

// request is do returning the HTTP status of a successful answer too.
func (c *Client) request(ctx context.Context, method, path string, body, out any) (int, error) {
	var reqBody []byte
	if body != nil {
		var err error
		if reqBody, err = json.Marshal(body); err != nil {
			return 0, fmt.Errorf("encoding the request: %w", err)
		}
	}
	resp, base, err := c.roundTrip(ctx, method, path, reqBody, retryable(method, path, body))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return 0, fmt.Errorf("reading the answer of %s %s: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := apiError(resp.StatusCode, data)
		if e.Status == http.StatusNotFound && base.Path != "" && strings.HasPrefix(e.Message, "no such ") {
			e.Message += fmt.Sprintf("; the controller address %s has the path %s: the API answers at https://%s", base, base.Path, base.Host)
		}
		return resp.StatusCode, e
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("the answer of %s %s is not the JSON expected: %v; is %s a jobsuite controller?", method, path, err, base)
		}
	}
	return resp.StatusCode, nil
}

// websocket opens the WebSocket at path (which may hold a query), at
// the first address that takes the connection, starting with the one
// that answered last.
func (c *Client) websocket(ctx context.Context, path string) (*websocket.Conn, error) {
	start := c.first()
	var err error
	for n := range len(c.addrs) {
		i := (start + n) % len(c.addrs)
		var conn *websocket.Conn
		conn, err = c.websocketAt(ctx, c.addrs[i], path)
		var apiErr *APIError
		if err == nil || errors.As(err, &apiErr) || ctx.Err() != nil || !notSent(err) {
			if err == nil {
				c.answered(i)
			}
			return conn, err
		}
	}
	return nil, err
}

// websocketAt opens the WebSocket at path of the controller at base.
func (c *Client) websocketAt(ctx context.Context, base *url.URL, path string) (*websocket.Conn, error) {
	cfg := c.tls.Clone()
	cfg.NextProtos = []string{"http/1.1"}
	d := websocket.Dialer{
		Proxy:            http.ProxyFromEnvironment,
		TLSClientConfig:  cfg,
		HandshakeTimeout: 15 * time.Second,
		ReadBufferSize:   64 << 10,
	}
	hdr := http.Header{}
	c.authorize(hdr)
	conn, resp, err := d.DialContext(ctx, urlAt(base, "wss", path), hdr)
	if err != nil {
		if errors.Is(err, websocket.ErrBadHandshake) && resp != nil {
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode < 200 || resp.StatusCode > 299 {
				return nil, apiError(resp.StatusCode, body)
			}
			return nil, fmt.Errorf("%s did not accept a WebSocket at %s (HTTP %d); is it a jobsuite controller?", base, path, resp.StatusCode)
		}
		return nil, connErrorAt(base, err)
	}
	conn.SetReadLimit(maxWSMessage)
	return conn, nil
}

// useToken makes every request of c carry the API token token, if not
// empty, as a bearer.
func (c *Client) useToken(token string) {
	if token == "" {
		return
	}
	c.token = token
	c.http.Transport = &bearerTransport{next: c.http.Transport, token: token}
}

// authorize adds the API token, if any, to a request's headers.
func (c *Client) authorize(h http.Header) {
	if c.token != "" {
		h.Set("Authorization", "Bearer "+c.token)
	}
}

// bearerTransport adds an API token to every request.
type bearerTransport struct {
	next  http.RoundTripper
	token string
}

func (t *bearerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Header.Get("Authorization") == "" {
		req = req.Clone(req.Context())
		req.Header.Set("Authorization", "Bearer "+t.token)
	}
	return t.next.RoundTrip(req)
}

func (t *bearerTransport) CloseIdleConnections() {
	if ci, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// url is the URL of path at the first address.
func (c *Client) url(scheme, path string) string { return urlAt(c.base, scheme, path) }

// urlAt is the URL of path (escaped, maybe with a query) at base.
func urlAt(base *url.URL, scheme, path string) string {
	u := *base
	u.Scheme = scheme
	p, q, _ := strings.Cut(path, "?")
	// path is already escaped (callers escape names they put in it).
	u.RawPath = base.EscapedPath() + p
	if unescaped, err := url.PathUnescape(u.RawPath); err == nil {
		u.Path = unescaped
	} else {
		u.Path, u.RawPath = base.Path+p, ""
	}
	u.RawQuery = q
	return u.String()
}

// connError explains a failure to reach or trust the controller at the
// first address.
func (c *Client) connError(err error) error { return connErrorAt(c.base, err) }

// connErrorAt explains a failure to reach or trust the controller at
// base.
func connErrorAt(base *url.URL, err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	var verr *tls.CertificateVerificationError
	switch {
	case strings.Contains(err.Error(), "no application protocol"):
		return fmt.Errorf("%s does not serve the jobsuite API (it refused HTTPS: %w): is it the agent port (the controller's -listen, 7443 by default) instead of the API's (-http, 8443 by default)? Check -addr/JOBSUITE_ADDR", base, err)
	case errors.As(err, &verr), errors.Is(err, certs.ErrWrongRole), errors.Is(err, certs.ErrNoRole):
		return fmt.Errorf("the controller at %s is not trusted: %w; check that -ca-cert/JOBSUITE_CACERT is the CA of its PKI", base, err)
	case strings.Contains(err.Error(), "remote error: tls:"):
		return fmt.Errorf("the controller at %s refused our certificate: %w; use an operator or viewer certificate issued by its CA (-client-cert/JOBSUITE_CLIENT_CERT)", base, err)
	}
	return fmt.Errorf("cannot reach the controller: %w; is the controller running at %s?", err, base)
}

// priorityText shows a job's priority: its name, or its number.
func priorityText(j *api.JobView) string {
	switch p := j.Priority.(type) {
	case string:
		return p
	case float64:
		return strconv.FormatFloat(p, 'f', -1, 64)
	}
	return strconv.Itoa(j.PriorityValue)
}

// commandLine is the command a job runs, with its params.
func commandLine(j *api.JobView) string {
	if j.Params == "" {
		return j.Command
	}
	return j.Command + " " + j.Params
}

// parseJobID parses a job ID argument.
func parseJobID(s string) (uint64, error) {
	id, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("job id must be a positive integer, got %q", s)
	}
	return id, nil
}

// usageError reports a wrong use of the command cmd and returns ExitUsage.
func usageError(m Meta, cmd, format string, args ...any) int {
	fmt.Fprintf(m.Stderr, "error: "+format+"\n", args...)
	fmt.Fprintf(m.Stderr, "Run 'jobsuite %s -h' for usage.\n", cmd)
	return ExitUsage
}

// writeRawJSON prints a raw JSON answer, ending with a newline.
func writeRawJSON(w io.Writer, raw json.RawMessage) {
	raw = bytes.TrimSpace(raw)
	w.Write(raw)
	io.WriteString(w, "\n")
}

// ago shows how long before now t was: "3s ago", "5m ago", "2h ago", "4d ago".
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "in " + shortDuration(-d)
	case d < time.Second:
		return "just now"
	}
	return shortDuration(d) + " ago"
}

// shortDuration rounds d to its largest unit: 3s, 5m, 2h, 4d.
func shortDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}
