package controller

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"

	"jobsuite/api"
)

// The web dashboard: static HTML, CSS and JavaScript embedded in the
// binary and served under /ui/. The files hold no data and no secrets:
// the pages call the same API as the CLI, with the browser's client
// certificate or an API token the user pastes (kept in sessionStorage).
// So /ui/ needs no certificate role; the API calls do.
//
//go:embed ui
var uiFS embed.FS

// uiAsset is one embedded file, ready to serve.
type uiAsset struct {
	data        []byte
	contentType string
	etag        string
}

// uiContentTypes are the types of the files the dashboard is made of;
// an embedded file of another type is a build mistake (uiAssets panics).
var uiContentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
}

// uiPolicy is the Content-Security-Policy of every dashboard file: only
// its own scripts and styles, no inline code, API calls and WebSockets
// to the controller itself, never framed.
const uiPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// uiAssets maps a file name below ui/ ("index.html") to the file.
var uiAssets = loadUIAssets()

func loadUIAssets() map[string]uiAsset {
	assets := map[string]uiAsset{}
	err := fs.WalkDir(uiFS, "ui", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := uiFS.ReadFile(name)
		if err != nil {
			return err
		}
		ct, ok := uiContentTypes[path.Ext(name)]
		if !ok {
			panic("controller: embedded dashboard file " + name + " has no known content type")
		}
		sum := sha256.Sum256(data)
		assets[strings.TrimPrefix(name, "ui/")] = uiAsset{data: data, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		panic("controller: reading the embedded dashboard: " + err.Error())
	}
	return assets
}

// uiAssetName resolves a request path below /ui/ to an embedded file:
// "" is index.html, and a name without an extension is its .html page
// (/ui/job → job.html), so the dashboard has short addresses.
func uiAssetName(file string) (string, bool) {
	name := strings.TrimPrefix(file, "/")
	if name == "" {
		name = "index.html"
	}
	if _, ok := uiAssets[name]; ok {
		return name, true
	}
	if path.Ext(name) == "" {
		if _, ok := uiAssets[name+".html"]; ok {
			return name + ".html", true
		}
	}
	return "", false
}

// handleUI serves the dashboard's files: GET /ui/ (the jobs page) and
// GET /ui/*file. Answers carry an ETag (a conditional request gets 304)
// and are revalidated on every load, so a new binary's pages show at once.
func (s *Server) handleUI(w http.ResponseWriter, r *http.Request, p httprouter.Params) {
	name, ok := uiAssetName(p.ByName("file"))
	if !ok {
		writeJSON(w, http.StatusNotFound, api.Error{Error: "no such file in the web dashboard: " + strconv.Quote(r.URL.Path) + "; open /ui/"})
		return
	}
	a := uiAssets[name]
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("ETag", a.etag)
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Security-Policy", uiPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.data))
}
