package stack_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/app/stack"
	"github.com/usernameregistry/registry/internal/app/stack/stacktest"
	"github.com/usernameregistry/registry/internal/auth"
)

// The tokens of the test callers; the file holds only their hashes.
const (
	tokClaim = "tok-claim-5f1e0c"
	tokRead  = "tok-read-a93b11"
	tokAdmin = "tok-admin-77d0e2"
	tokAll   = "tok-all-0c4412"
	tokOther = "tok-other-e18d20"
)

var allTokens = []string{tokClaim, tokRead, tokAdmin, tokAll, tokOther}

func tokensFile(t testing.TB, lines ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func tokenLine(name, scopes, token string) string {
	return name + " " + scopes + " " + auth.HashToken(token)
}

func newStore(t testing.TB, path string) *auth.Store {
	t.Helper()
	s, err := auth.NewStore(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type authReply struct {
	Code    int
	WWWAuth string
	Body    map[string]any
}

func call(t testing.TB, method, url, token, body string) authReply {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Errorf("%s %s: %v", method, url, err)
		return authReply{}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := authReply{Code: resp.StatusCode, WWWAuth: resp.Header.Get("WWW-Authenticate")}
	json.Unmarshal(raw, &r.Body) //nolint:errcheck // 404s from the mux are text
	return r
}

// TestAuthScopes: every route answers 401 without a known token, 403
// without its scope, and is served with it; /healthz and /readyz need no
// token; claims record their caller; no token reaches the log, even at
// debug level.
func TestAuthScopes(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	file := tokensFile(t, "# test callers", tokenLine("signup", "claim", tokClaim), tokenLine("profile", "read", tokRead),
		tokenLine("ops", "admin", tokAdmin), tokenLine("all", "claim,read,admin", tokAll))
	r := stacktest.Start(t, stacktest.Options{Projectors: 1, APIs: 1, Tokens: newStore(t, file), Logger: log})
	api := r.APIs[0].URL
	user := newID()

	routes := []struct {
		method, path, body string
		scope              string // "" for none
		served             int    // the code with the right token
	}{
		{"POST", "/v1/claims?wait=20s", claimBody("", user, "scoped"), "claim", 201},
		{"GET", "/v1/claims/" + newID(), "", "read", 404},
		{"GET", "/v1/usernames/scoped", "", "read", 200},
		{"POST", "/v1/releases", `{}`, "claim", 422}, // served: the empty body is refused by the route
		{"POST", "/v1/renames", `{}`, "claim", 422},
		{"GET", "/v1/releases/" + newID(), "", "read", 404},
		{"GET", "/v1/admin/holds", "", "admin", 404},
		{"POST", "/v1/admin/reserve", `{}`, "admin", 404},
		{"POST", "/v1/admin/transfers", `{}`, "admin", 422},
		{"GET", "/v1/admin/transfers/" + newID(), "", "admin", 404},
		{"DELETE", "/v1/claims/" + newID(), "", "claim", 405},
		{"GET", "/healthz", "", "", 200},
		{"GET", "/readyz", "", "", 200},
	}
	holder := map[string]string{"claim": tokClaim, "read": tokRead, "admin": tokAdmin}
	for _, rt := range routes {
		url := api + rt.path
		if rt.scope == "" {
			if got := call(t, rt.method, url, "", rt.body); got.Code != rt.served {
				t.Errorf("%s %s without a token: %d, want %d", rt.method, rt.path, got.Code, rt.served)
			}
			continue
		}
		for _, tok := range []string{"", tokOther} {
			got := call(t, rt.method, url, tok, rt.body)
			if got.Code != 401 || got.WWWAuth != "Bearer" || got.Body["status"] != "error" || got.Body["reason"] == nil {
				t.Errorf("%s %s with token %q: %d %q %v, want 401, WWW-Authenticate: Bearer and a JSON error", rt.method, rt.path, tok, got.Code, got.WWWAuth, got.Body)
			}
		}
		for scope, tok := range holder {
			if scope == rt.scope {
				continue
			}
			got := call(t, rt.method, url, tok, rt.body)
			if got.Code != 403 || got.Body["status"] != "error" || !strings.Contains(got.Body["detail"].(string), rt.scope) {
				t.Errorf("%s %s with a %s token: %d %v, want 403 naming %s", rt.method, rt.path, scope, got.Code, got.Body, rt.scope)
			}
		}
		if got := call(t, rt.method, url, holder[rt.scope], rt.body); got.Code != rt.served {
			t.Errorf("%s %s with a %s token: %d %v, want %d", rt.method, rt.path, rt.scope, got.Code, got.Body, rt.served)
		}
	}
	// The operator pages are not on the public port, whatever the token;
	// they are on the operator listener.
	for _, path := range []string{"/ui", "/ui/events", "/metrics"} {
		if got := call(t, "GET", api+path, tokAll, ""); got.Code != 404 {
			t.Errorf("GET %s on the API port with an all-scopes token: %d, want 404", path, got.Code)
		}
	}
	if got := call(t, "GET", r.APIs[0].OpsURL+"/metrics", "", ""); got.Code != 200 {
		t.Errorf("GET /metrics on the operator listener: %d", got.Code)
	}
	// A claim by a caller holding every scope, then a lowercase scheme.
	req, _ := http.NewRequest("POST", api+"/v1/claims?wait=20s", strings.NewReader(claimBody("", user, "scoped2")))
	req.Header.Set("Authorization", "bearer "+tokAll)
	req.Header.Set("Content-Type", "application/json")
	if resp, err := httpClient.Do(req); err != nil || resp.StatusCode != 201 {
		t.Errorf("claim with scheme 'bearer': %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// The claims and decisions name their callers.
	waitSettled(t, r)
	callers := map[string]string{}
	for _, rec := range readTopic(t, r, events.TopicClaims) {
		c, err := events.DecodeClaim(rec)
		if err != nil {
			t.Fatal(err)
		}
		callers[c.Username] = c.Caller
	}
	if callers["scoped"] != "signup" || callers["scoped2"] != "all" {
		t.Errorf("claims record callers %v, want scoped by signup, scoped2 by all", callers)
	}
	for _, rec := range readTopic(t, r, events.TopicRegistrations) {
		d, err := events.DecodeDecision(rec)
		if err != nil {
			t.Fatal(err)
		}
		if d.Caller != callers[d.Username] {
			t.Errorf("decision for %s names caller %q, its claim %q", d.Username, d.Caller, callers[d.Username])
		}
	}

	out := logs.String()
	if !strings.Contains(out, "caller=signup") {
		t.Errorf("the debug log never names caller signup:\n%s", out)
	}
	for _, tok := range allTokens {
		if strings.Contains(out, tok) {
			t.Errorf("token %q appears in the log", tok)
		}
	}
}

// TestCallerShare: a caller cannot hold more than its share of
// --max-waiters, so another caller's claims still get through.
func TestCallerShare(t *testing.T) {
	t.Parallel()
	file := tokensFile(t, tokenLine("noisy", "claim", tokClaim), tokenLine("quiet", "claim", tokOther))
	// No projector: every claim waits its whole ?wait.
	r := stacktest.Start(t, stacktest.Options{APIs: 1, MaxWaiters: 4, Tokens: newStore(t, file)})
	api := r.APIs[0].URL
	var wg sync.WaitGroup
	codes := make(chan int, 2)
	for i := range 2 {
		wg.Go(func() {
			codes <- call(t, "POST", api+"/v1/claims?wait=3s", tokClaim, claimBody("", newID(), "noisy"+string(rune('a'+i)))).Code
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for r.APIs[0].Reader.Waiting() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	got := call(t, "POST", api+"/v1/claims?wait=0s", tokClaim, claimBody("", newID(), "noisyc"))
	if got.Code != 503 || got.Body["reason"] != "overloaded" || !strings.Contains(got.Body["detail"].(string), "noisy") {
		t.Errorf("a third claim from a caller holding its share (2 of 4): %d %v, want 503 overloaded", got.Code, got.Body)
	}
	if got := call(t, "POST", api+"/v1/claims?wait=0s", tokOther, claimBody("", newID(), "quiet")); got.Code != 202 {
		t.Errorf("another caller's claim while the first holds its share: %d %v, want 202", got.Code, got.Body)
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 202 {
			t.Errorf("a claim within the share: %d, want 202", c)
		}
	}
}

// TestContentType: a body that is not declared application/json is 415,
// so a web page cannot claim a name with a simple (preflight-free) POST.
func TestContentType(t *testing.T) {
	t.Parallel()
	r := stacktest.Start(t, stacktest.Options{Projectors: 1, APIs: 1})
	api := r.APIs[0].URL
	for _, ct := range []string{"", "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonx"} {
		req, _ := http.NewRequest("POST", api+"/v1/claims?wait=0s", strings.NewReader(claimBody("", newID(), "typed")))
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnsupportedMediaType {
			t.Errorf("Content-Type %q: %d, want 415", ct, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest("POST", api+"/v1/claims?wait=0s", strings.NewReader(claimBody("", newID(), "typed")))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusUnsupportedMediaType {
		t.Errorf("application/json with a charset: 415")
	}
	waitSettled(t, r)
	if n := len(ledger(t, r)); n != 1 {
		t.Errorf("ledger holds %d claims, want only the JSON one", n)
	}
}

// TestDatabaseDownAnswers: with the database unreachable or silent, the
// API answers 503 within its deadline, blames the database in words, and
// never shows connection details (they go to the log).
func TestDatabaseDownAnswers(t *testing.T) {
	t.Parallel()
	// A "database" that accepts connections and never answers.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	refused, _ := net.Listen("tcp", "127.0.0.1:0")
	refusedAddr := refused.Addr().String()
	refused.Close()

	for name, addr := range map[string]string{"silent": silent.Addr().String(), "refusing": refusedAddr} {
		t.Run(name, func(t *testing.T) {
			host, port, _ := net.SplitHostPort(addr)
			pool, err := pgxpool.New(context.Background(), "postgres://secretuser:pw@"+addr+"/secretdb?connect_timeout=60")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(pool.Close)
			var logs syncBuffer
			reg := stacktest.Start(t, stacktest.Options{}) // topics only: no node
			a, err := stack.NewAPI(stack.APIConfig{Kafka: reg.Kafka, Pool: pool, DBTimeout: 500 * time.Millisecond,
				Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			ln, _ := net.Listen("tcp", "127.0.0.1:0")
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- stack.RunAPI(ctx, a, stack.Listeners{API: ln}) }()
			t.Cleanup(func() { cancel(); <-done })
			<-a.Reader.Positioned()
			url := "http://" + ln.Addr().String()
			for _, c := range []struct{ method, path, body, blame string }{
				{"GET", "/v1/usernames/alice", "", "database"},
				{"GET", "/v1/claims/" + newID(), "", "database"},
				{"POST", "/v1/claims?wait=1s", claimBody(newID(), newID(), "alice"), "database"},
				{"GET", "/readyz", "", "database"},
			} {
				start := time.Now()
				got := call(t, c.method, url+c.path, "", c.body)
				took := time.Since(start)
				raw, _ := json.Marshal(got.Body)
				if got.Code != 503 || took > 3*time.Second || !strings.Contains(string(raw), c.blame) {
					t.Errorf("%s %s: %d after %v: %s; want 503 within 3s blaming the %s", c.method, c.path, got.Code, took, raw, c.blame)
				}
				for _, leak := range []string{"secretuser", "secretdb", host, port, "SQLSTATE", "claims topic"} {
					if strings.Contains(string(raw), leak) {
						t.Errorf("%s %s: body %s shows %q", c.method, c.path, raw, leak)
					}
				}
			}
			if name == "refusing" && !strings.Contains(logs.String(), port) {
				t.Errorf("the log lacks the connection details the body leaves out:\n%s", logs.String())
			}
		})
	}
}
