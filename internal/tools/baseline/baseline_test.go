package baseline_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/usernameregistry/registry/internal/httpwire"
	"github.com/usernameregistry/registry/internal/testenv"
	"github.com/usernameregistry/registry/internal/tools/baseline"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// reply is an answer as the tests read it.
type reply struct {
	Code int
	httpwire.Answer
}

// setup starts a baseline of the given variant on a fresh database.
func setup(t *testing.T, naive bool) string {
	t.Helper()
	pool, _ := testenv.Database(t)
	h, err := baseline.New(context.Background(), baseline.Config{Pool: pool, Naive: naive, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func do(t testing.TB, method, url, body string) reply {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := reply{Code: resp.StatusCode}
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("%s %s: answer %d is not JSON: %q", method, url, resp.StatusCode, raw)
	}
	return r
}

func claim(requestID, userID, username string) string {
	b, _ := json.Marshal(map[string]string{"request_id": requestID, "user_id": userID, "username": username})
	return string(b)
}

// TestVerdictsMatchTheRegistry replays the README's examples against both
// variants: one request at a time, the naive one is as right as the safe
// one, and both answer as the registry does.
func TestVerdictsMatchTheRegistry(t *testing.T) {
	t.Parallel()
	for _, naive := range []bool{false, true} {
		t.Run(map[bool]string{false: "safe", true: "naive"}[naive], func(t *testing.T) {
			t.Parallel()
			readmeExamples(t, setup(t, naive))
		})
	}
}

func readmeExamples(t *testing.T, url string) {
	a, b := uuid.NewString(), uuid.NewString()
	id1 := uuid.NewString()
	steps := []struct {
		what, body                               string
		code                                     int
		status, reason, canonical, conflictsWith string
	}{
		{"register", claim(id1, a, "alice"), 201, "registered", "", "alice", ""},
		{"retry", claim(id1, a, "alice"), 200, "registered", "", "alice", ""},
		{"holder again, new request", claim(uuid.NewString(), a, "Alice"), 200, "registered", "", "alice", ""},
		{"another user", claim(uuid.NewString(), b, "ALiCE"), 409, "rejected", "taken", "alice", "alice"},
		{"look-alike", claim(uuid.NewString(), b, "a1ice"), 409, "rejected", "confusable", "a1ice", "alice"},
		{"holder's own look-alike", claim(uuid.NewString(), a, "a1ice"), 409, "rejected", "confusable", "a1ice", "alice"},
		{"reserved", claim(uuid.NewString(), b, "Admin"), 409, "rejected", "reserved", "admin", ""},
		{"reuse with another name", claim(id1, a, "bob"), 422, "rejected", "request_conflict", "", ""},
		{"reuse by another user", claim(id1, b, "alice"), 422, "rejected", "request_conflict", "", ""},
		{"no request_id", `{"username":"erin","user_id":"` + b + `"}`, 201, "registered", "", "erin", ""},
		{"space", claim("", b, "alice smith"), 422, "rejected", "invalid", "", ""},
		{"bad user_id", `{"username":"erin","user_id":"42"}`, 422, "rejected", "invalid", "", ""},
		{"unknown field", `{"username":"erin","userid":"` + b + `"}`, 422, "rejected", "invalid", "", ""},
		{"too large", `{"username":"` + strings.Repeat("a", 70<<10) + `"}`, 413, "rejected", "invalid", "", ""},
	}
	for _, s := range steps {
		got := do(t, "POST", url+"/v1/claims", s.body)
		if got.Code != s.code || got.Status != s.status || got.Reason != s.reason || got.Canonical != s.canonical || got.ConflictsWith != s.conflictsWith {
			t.Errorf("%s: got %d %+v, want %d %s/%s canonical %q conflicts_with %q", s.what, got.Code, got, s.code, s.status, s.reason, s.canonical, s.conflictsWith)
		}
	}
	if got := do(t, "POST", url+"/v1/claims?wait=soon", claim("", a, "frank")); got.Code != 422 || !strings.Contains(got.Detail, "not a duration") {
		t.Errorf("bad wait: %d %+v", got.Code, got)
	}
	if got := do(t, "GET", url+"/v1/usernames/ALiCE", ""); got.Code != 200 || got.UserID != a || got.RequestID != id1 || got.Username != "alice" {
		t.Errorf("GET ALiCE: %d %+v", got.Code, got)
	}
	if got := do(t, "GET", url+"/v1/usernames/frank", ""); got.Code != 404 || got.Status != "unknown" || got.Canonical != "frank" {
		t.Errorf("GET frank: %d %+v", got.Code, got)
	}
	if got := do(t, "GET", url+"/readyz", ""); got.Code != 200 {
		t.Errorf("readyz: %d %+v", got.Code, got)
	}
}

// TestSafeGrantsOnce: many users ask for one name at once, and every
// request is sent twice at once as if retried. The constraints let exactly
// one request win; its twin and every other user's requests agree.
func TestSafeGrantsOnce(t *testing.T) {
	t.Parallel()
	url := setup(t, false)
	const users = 24
	ids := make([]string, users)
	got := make([][2]reply, users)
	var wg sync.WaitGroup
	for i := range users {
		ids[i] = uuid.NewString()
		body := claim(ids[i], uuid.NewString(), "zoë")
		for twin := range 2 {
			wg.Go(func() { got[i][twin] = do(t, "POST", url+"/v1/claims", body) })
		}
	}
	wg.Wait()
	wins := 0
	for i, pair := range got {
		for _, r := range pair {
			if r.Code == 201 {
				wins++
			}
		}
		if pair[0].Status != pair[1].Status || pair[0].Reason != pair[1].Reason {
			t.Errorf("request %s answered %+v and %+v", ids[i], pair[0], pair[1])
		}
	}
	if wins != 1 {
		t.Errorf("%d requests won zoë, want exactly 1", wins)
	}
}
