package ui

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
)

// The page and its assets. The page loads nothing but these, so it works
// without network access, and its Content-Security-Policy says so.
var (
	//go:embed page.html
	page []byte
	//go:embed assets
	assetFS embed.FS
)

const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the page and its data, under full paths that start with
// /ui: mount it on the node's mux at both "/ui" and "/ui/".
//
//	GET /ui             the page
//	GET /ui/assets/...  its script and style sheet
//	GET /ui/history     JSON: per-second counts by reason over the window, and the latest rejections
//	GET /ui/events      text/event-stream: "rejection" and "stats" events, and heartbeats
func (u *UI) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ui", servePage)
	mux.Handle("GET /ui/{$}", http.RedirectHandler("/ui", http.StatusMovedPermanently))
	mux.Handle("GET /ui/assets/", assetHandler())
	mux.HandleFunc("GET /ui/history", u.serveHistory)
	mux.HandleFunc("GET /ui/events", u.serveEvents)
	return mux
}

func servePage(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-cache")
	w.Write(page) //nolint:errcheck // the client went away
}

func assetHandler() http.Handler {
	sub, err := fs.Sub(assetFS, "assets")
	if err != nil {
		panic(err) // the directory is embedded: it cannot be missing
	}
	files := http.StripPrefix("/ui/assets/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Embedded files carry no modification time, so ask the browser to
		// revalidate: a rebuilt binary then serves its new script at once.
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	})
}

func (u *UI) serveHistory(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(u.history()) //nolint:errcheck // the client went away
}
