package stack_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/app/stack/stacktest"
)

// TestBadInput: every malformed request gets a clear 4xx answer and
// nothing is claimed.
func TestBadInput(t *testing.T) {
	t.Parallel()
	r := stacktest.Start(t, stacktest.Options{Projectors: 1, APIs: 1})
	api := r.APIs[0]
	user := newID()
	cases := []struct {
		name, url, body string
		code            int
		reason, detail  string
	}{
		{"not JSON", "/v1/claims", `{"username":`, 422, "invalid", "not a valid claim"},
		{"JSON array", "/v1/claims", `["alice"]`, 422, "invalid", "not a valid claim"},
		{"two values", "/v1/claims", `{"username":"a","user_id":"` + user + `"}{}`, 422, "invalid", "more than one JSON value"},
		{"unknown field", "/v1/claims", `{"username":"a","userid":"` + user + `"}`, 422, "invalid", `unknown field "userid"`},
		{"field name in another case", "/v1/claims", `{"username":"a","USER_ID":"` + user + `"}`, 422, "invalid", `unknown field "USER_ID"`},
		{"duplicate field", "/v1/claims", `{"username":"x","username":"y","user_id":"` + user + `"}`, 422, "invalid", `duplicate field "username"`},
		{"duplicate id", "/v1/claims", `{"username":"x","user_id":"` + user + `","user_id":"` + user + `"}`, 422, "invalid", `duplicate field "user_id"`},
		{"no username", "/v1/claims", `{"user_id":"` + user + `"}`, 422, "invalid", "username is required"},
		{"no user_id", "/v1/claims", `{"username":"alice"}`, 422, "invalid", "user_id is required"},
		{"bad user_id", "/v1/claims", `{"username":"alice","user_id":"42"}`, 422, "invalid", `user_id "42" is not a UUID`},
		{"bad request_id", "/v1/claims", `{"username":"alice","user_id":"` + user + `","request_id":"x"}`, 422, "invalid", `request_id "x" is not a UUID`},
		{"empty username", "/v1/claims", claimBody("", user, ""), 422, "invalid", "empty"},
		{"space", "/v1/claims", claimBody("", user, "al ice"), 422, "invalid", "space"},
		{"control character", "/v1/claims", claimBody("", user, "al\aice"), 422, "invalid", "control character"},
		{"too long", "/v1/claims", claimBody("", user, strings.Repeat("a", 65)), 422, "invalid", "64"},
		{"invalid UTF-8", "/v1/claims", `{"username":"al` + "\xff" + `ice","user_id":"` + user + `"}`, 422, "invalid", "UTF-8"},
		{"bad wait", "/v1/claims?wait=soon", claimBody("", user, "alice"), 422, "invalid", "not a duration"},
		{"negative wait", "/v1/claims?wait=-1s", claimBody("", user, "alice"), 422, "invalid", "is negative"},
		{"too large", "/v1/claims", `{"username":"` + strings.Repeat("a", 70<<10) + `"}`, 413, "invalid", "larger than"},
	}
	for _, c := range cases {
		got := do(t, "POST", api.URL+c.url, c.body)
		if got.Code != c.code || got.Status != "rejected" || got.Reason != c.reason || !strings.Contains(got.Detail, c.detail) {
			t.Errorf("%s: got %d %+v, want %d reason %s detail containing %q", c.name, got.Code, got, c.code, c.reason, c.detail)
		}
	}
	if got := do(t, "GET", api.URL+"/v1/claims/not-a-uuid", ""); got.Code != 422 {
		t.Errorf("GET claim with a bad id: %d %+v", got.Code, got)
	}
	if got := do(t, "GET", api.URL+"/v1/claims/"+newID(), ""); got.Code != 404 || got.Status != "unknown" {
		t.Errorf("GET unknown claim: %d %+v", got.Code, got)
	}
	if got := do(t, "GET", api.URL+"/v1/usernames/al%20ice", ""); got.Code != 422 {
		t.Errorf("GET username with a space: %d %+v", got.Code, got)
	}
	waitSettled(t, r)
	if led := ledger(t, r); len(led) != 0 {
		t.Errorf("bad input reached the ledger: %d rows", len(led))
	}
}

// TestRequestConflict: a request_id reused with another payload is
// answered request_conflict, whether the first decision is already stored
// or both claims are in flight together.
func TestRequestConflict(t *testing.T) {
	t.Parallel()
	r := stacktest.Start(t, stacktest.Options{Projectors: 1, APIs: 1})
	api := r.APIs[0]
	id, user := newID(), newID()
	want(t, "first", post(t, api, id, user, "carol"), http.StatusCreated, "registered", "", "")
	got := post(t, api, id, user, "Carol") // same key, so same partition
	if got.Code != 422 || got.Reason != "request_conflict" || got.Detail == "" {
		t.Errorf("reuse with another username: %d %+v", got.Code, got)
	}
	got = post(t, api, id, newID(), "carol")
	if got.Code != 422 || got.Reason != "request_conflict" {
		t.Errorf("reuse by another user: %d %+v", got.Code, got)
	}

	// Both in flight, one partition ("erin" and "Erin" share a key):
	// whichever claim the log puts first owns the request_id; the other is
	// request_conflict.
	id2 := newID()
	a, b := make(chan reply), make(chan reply)
	go func() { a <- post(t, api, id2, user, "erin") }()
	go func() { b <- post(t, api, id2, user, "Erin") }()
	ra, rb := <-a, <-b
	if (ra.Reason == "request_conflict") == (rb.Reason == "request_conflict") {
		t.Errorf("two payloads under one request_id: got %+v and %+v, want exactly one request_conflict", ra, rb)
	}

	waitSettled(t, r)
	checkAgreement(t, r)
}

// TestRequestIDReusedAcrossPartitions: a decision may depend only on its
// own partition's log, so a request_id reused for names in two partitions
// is decided in each on its own merits. Lookups answer the earliest; a
// reuse in a partition that already decided the request_id is
// request_conflict.
func TestRequestIDReusedAcrossPartitions(t *testing.T) {
	t.Parallel()
	r := stacktest.Start(t, stacktest.Options{APIs: 1}) // no projector: both claims wait in the log
	api := r.APIs[0]
	id, user := newID(), newID()
	if events.Partition([]byte("grace"), 12) == events.Partition([]byte("heidi"), 12) {
		t.Fatal("grace and heidi share a partition; pick names in two")
	}
	for _, name := range []string{"grace", "heidi"} {
		if got := do(t, "POST", api.URL+"/v1/claims?wait=0s", claimBody(id, user, name)); got.Code != http.StatusAccepted {
			t.Fatalf("claim %s: %d %+v", name, got.Code, got)
		}
	}
	r.StartProjector()
	waitSettled(t, r)
	led := checkAgreement(t, r)
	if len(led) != 2 {
		t.Fatalf("ledger rows: %d, want one per partition", len(led))
	}
	for k, row := range led {
		if row.outcome != "registered" {
			t.Errorf("%v: %s", k, row.outcome)
		}
	}
	got := do(t, "GET", api.URL+"/v1/claims/"+id, "")
	if got.Code != http.StatusOK || (got.Canonical != "grace" && got.Canonical != "heidi") {
		t.Errorf("lookup of a request_id decided in two partitions: %d %+v", got.Code, got)
	}
	if again := do(t, "GET", api.URL+"/v1/claims/"+id, ""); again.Canonical != got.Canonical {
		t.Errorf("lookup is not stable: %s then %s", got.Canonical, again.Canonical)
	}
	if got := post(t, api, id, user, "Grace"); got.Reason != "request_conflict" {
		t.Errorf("a third payload in grace's partition after both were decided: %+v", got)
	}
	// A third payload in another partition is decided there on its merits,
	// as the first two were: the ledger of grace's or heidi's partition
	// cannot answer for it, and a retry returns that same decision.
	if events.Partition([]byte("ivan"), 12) == events.Partition([]byte("grace"), 12) || events.Partition([]byte("ivan"), 12) == events.Partition([]byte("heidi"), 12) {
		t.Fatal("ivan shares a partition with grace or heidi; pick another name")
	}
	first := post(t, api, id, user, "ivan")
	want(t, "a third payload in its own partition", first, http.StatusCreated, "registered", "", "")
	want(t, "its retry", post(t, api, id, user, "ivan"), http.StatusOK, "registered", "", "")
}

// TestPending: a claim not decided within ?wait is answered 202 with its
// status URL, and is decided all the same.
func TestPending(t *testing.T) {
	t.Parallel()
	r := stacktest.Start(t, stacktest.Options{APIs: 1}) // no projector yet: nothing gets decided
	api := r.APIs[0]
	got := do(t, "POST", api.URL+"/v1/claims?wait=200ms", claimBody("", newID(), "grace"))
	if got.Code != http.StatusAccepted || got.Status != "pending" || got.Location != "/v1/claims/"+got.RequestID {
		t.Fatalf("undecided claim: %d %+v", got.Code, got)
	}
	if st := do(t, "GET", api.URL+got.Location, ""); st.Code != http.StatusNotFound || st.Status != "unknown" {
		t.Errorf("status of a pending claim: %d %+v", st.Code, st)
	}
	r.StartProjector()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := do(t, "GET", api.URL+got.Location, "")
		if st.Code == http.StatusOK {
			if st.Status != "registered" || st.Canonical != "grace" {
				t.Errorf("decided claim: %+v", st)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("claim still undecided 30s after a projector started: %d %+v", st.Code, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestOverload: with every waiter slot taken, a claim is refused with 503
// and Retry-After instead of queueing without bound.
func TestOverload(t *testing.T) {
	t.Parallel()
	r := stacktest.Start(t, stacktest.Options{APIs: 1, MaxWaiters: 1})
	api := r.APIs[0]
	held := make(chan reply)
	go func() { held <- do(t, "POST", api.URL+"/v1/claims?wait=3s", claimBody("", newID(), "heidi")) }()
	deadline := time.Now().Add(10 * time.Second)
	for api.Reader.Waiting() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	got := do(t, "POST", api.URL+"/v1/claims", claimBody("", newID(), "ivan"))
	if got.Code != http.StatusServiceUnavailable || got.RetryAfter == "" {
		t.Errorf("claim past the waiter bound: %d %+v retry-after %q", got.Code, got, got.RetryAfter)
	}
	if h := <-held; h.Code != http.StatusAccepted {
		t.Errorf("held claim with no projector: %d %+v", h.Code, h)
	}
}
