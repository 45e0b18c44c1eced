package auth

import (
	"cmp"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"strconv"
	"strings"

	"github.com/usernameregistry/registry/claims"
)

// Rule says which scope requests for a route need. The first rule whose
// Method and Prefix match a request applies (see Rules).
type Rule struct {
	// Method is the HTTP method, or "" for any.
	Method string
	// Prefix matches a path equal to it or below it: "/v1/claims" matches
	// /v1/claims and /v1/claims/x, not /v1/claimsx.
	Prefix string
	// Scope is what the caller needs; "" means no token at all is needed.
	Scope Scope
	// Waits marks routes that hold a waiter for a decision; they count
	// against the caller's share of --max-waiters.
	Waits bool
}

// Rules is the one table of which scope each route needs, in match order.
// Routes not yet built (releases, renames, admin) are covered the day they
// appear. A request under /v1/ that no other rule matches needs claim: a
// new write route is never open by omission. Any other path needs a known
// token but no scope (it is a 404 anyway).
var Rules = []Rule{
	{Prefix: "/healthz"},
	{Prefix: "/readyz"},
	{Prefix: "/v1/admin", Scope: ScopeAdmin},
	{Method: http.MethodPost, Prefix: "/v1/claims", Scope: ScopeClaim, Waits: true},
	{Method: http.MethodPost, Prefix: "/v1/releases", Scope: ScopeClaim, Waits: true},
	{Method: http.MethodPost, Prefix: "/v1/renames", Scope: ScopeClaim, Waits: true},
	{Method: http.MethodGet, Prefix: "/v1", Scope: ScopeRead},
	{Method: http.MethodHead, Prefix: "/v1", Scope: ScopeRead},
	{Prefix: "/v1", Scope: ScopeClaim},
}

// anyToken is the rule for paths outside the table: a known caller, no scope.
var anyToken = Rule{Prefix: "/"}

// RuleFor returns the rule for a request, and whether a token is needed.
func RuleFor(method, urlPath string) (Rule, bool) {
	p := path.Clean("/" + urlPath)
	for _, r := range Rules {
		if (r.Method == "" || r.Method == method) && (p == r.Prefix || strings.HasPrefix(p, r.Prefix+"/")) {
			return r, r.Scope != ""
		}
	}
	return anyToken, true
}

// Anonymous is the caller recorded when the API runs without a tokens file
// (registry dev, or serve --insecure-no-auth).
const Anonymous = "anonymous"

// Config configures Middleware.
type Config struct {
	// Store holds the callers. Nil runs open: every request is Anonymous,
	// holding every scope. Only with --insecure-no-auth or in dev.
	Store *Store
	// MaxWaiters is the node's --max-waiters. A caller with the claim scope
	// may hold at most ceil(MaxWaiters / callers with the claim scope)
	// requests on Waits routes at once; past it, 503 overloaded. Zero or
	// less disables the share.
	MaxWaiters int
	// Logger defaults to slog.Default(). It logs caller names, never tokens.
	Logger *slog.Logger
}

// Middleware authenticates every request to next by its bearer token and
// refuses it when the caller lacks the route's scope (Rules):
//
//	no or unknown token        401, WWW-Authenticate: Bearer
//	known token, wrong scope   403
//
// both with the API's JSON error body. An authorized request carries its
// caller's name (claims.CallerFrom) so the claims it writes record it.
func Middleware(cfg Config, next http.Handler) http.Handler {
	return &middleware{cfg: cfg, next: next, log: cmp.Or(cfg.Logger, slog.Default()).With("component", "auth"), shares: newShares()}
}

type middleware struct {
	cfg    Config
	next   http.Handler
	log    *slog.Logger
	shares *shares
}

func (m *middleware) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rule, needToken := RuleFor(r.Method, r.URL.Path)
	if !needToken {
		m.next.ServeHTTP(w, r)
		return
	}
	name, claimers, status, detail := m.authorize(r, rule)
	if status != 0 {
		m.log.Debug("request refused", "method", r.Method, "path", r.URL.Path, "caller", name, "status", status)
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", "Bearer")
		}
		writeError(w, status, detail)
		return
	}
	m.log.Debug("request authorized", "method", r.Method, "path", r.URL.Path, "caller", name)
	if rule.Waits && m.cfg.MaxWaiters > 0 {
		limit := ShareOf(m.cfg.MaxWaiters, claimers)
		if !m.shares.acquire(name, limit) {
			w.Header().Set("Retry-After", "1")
			writeJSON(w, http.StatusServiceUnavailable, "overloaded",
				fmt.Sprintf("caller %s already has %d requests waiting, its share of this node's waiters; retry later", name, limit))
			return
		}
		defer m.shares.release(name)
	}
	m.next.ServeHTTP(w, r.WithContext(claims.WithCaller(r.Context(), name)))
}

// authorize returns the caller's name and how many callers share the
// waiters, or the status and detail to refuse with.
func (m *middleware) authorize(r *http.Request, rule Rule) (name string, claimers, status int, detail string) {
	if m.cfg.Store == nil {
		return Anonymous, 1, 0, ""
	}
	cs := m.cfg.Store.Callers()
	token, ok := bearer(r.Header.Get("Authorization"))
	if !ok {
		return "", 0, http.StatusUnauthorized, "this API needs a bearer token: send the header Authorization: Bearer followed by your token"
	}
	c := cs.Lookup(token)
	if c == nil {
		return "", 0, http.StatusUnauthorized, "the bearer token is not known to this registry"
	}
	if rule.Scope != "" && !c.Has(rule.Scope) {
		return c.Name, 0, http.StatusForbidden, fmt.Sprintf("caller %s lacks the %s scope this route needs", c.Name, rule.Scope)
	}
	return c.Name, cs.Count(ScopeClaim), 0, ""
}

// bearer extracts the token of an "Authorization: Bearer <token>" value
// (RFC 6750 §2.1; the scheme is case-insensitive).
func bearer(h string) (string, bool) {
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// ShareOf is a caller's share of maxWaiters among n callers with the claim
// scope: ceil(maxWaiters / n), at least 1.
func ShareOf(maxWaiters, n int) int {
	n = max(n, 1)
	return max((maxWaiters+n-1)/n, 1)
}

func writeError(w http.ResponseWriter, status int, detail string) {
	reason := "unauthorized"
	if status == http.StatusForbidden {
		reason = "forbidden"
	}
	writeJSON(w, status, reason, detail)
}

// writeJSON writes the API's error body: {"status":"error","reason":…,"detail":…}.
func writeJSON(w http.ResponseWriter, status int, reason, detail string) {
	b, _ := json.Marshal(struct {
		Status string `json:"status"`
		Reason string `json:"reason"`
		Detail string `json:"detail"`
	}{"error", reason, detail})
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b) //nolint:errcheck // the client went away
}
