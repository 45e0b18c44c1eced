package claims

import (
	"fmt"
	"mime"
	"net/http"
	"strings"

	"github.com/usernameregistry/registry/internal/httpwire"
)

// withBodyType applies requireJSON to every route that takes a body (POST,
// PUT, PATCH), so a route added later is covered without remembering to.
func withBodyType(pattern string, h http.HandlerFunc) http.HandlerFunc {
	method, _, _ := strings.Cut(pattern, " ")
	switch method {
	case http.MethodPost, http.MethodPatch:
		return requireJSON(h)
	case http.MethodPut:
		// PUT /v1/admin/reserved/{name} takes an optional body: without
		// one there is nothing to type. A PUT always needs a CORS
		// preflight, so this opens nothing to a web page.
		return func(w http.ResponseWriter, r *http.Request) {
			if r.ContentLength == 0 {
				h(w, r)
				return
			}
			requireJSON(h)(w, r)
		}
	}
	return h
}

// requireJSON answers 415 to a request whose Content-Type is not
// application/json (parameters such as charset=utf-8 allowed). A web page
// can POST text/plain, form data or a typeless body to any origin without
// a CORS preflight; application/json needs one, so refusing the rest keeps
// a browser from claiming names on a visitor's behalf.
func requireJSON(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ct := r.Header.Get("Content-Type")
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			got := "none"
			if ct != "" {
				got = fmt.Sprintf("%.100q", ct)
			}
			httpwire.WriteError(w, http.StatusUnsupportedMediaType, "invalid", "the request body must be JSON sent with Content-Type: application/json (got "+got+")")
			return
		}
		next(w, r)
	}
}
