package stack_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/usernameregistry/registry/internal/app/stack/stacktest"
)

func jsonBody(kv ...string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			m[kv[i]] = kv[i+1]
		}
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// TestNamesChangeHands walks the HTTP contract for releases, holds,
// renames, runtime reservations and transfers against one registry with
// a 3s hold, including a name that becomes free to others once its hold
// has passed, and checks that no rename lock is left behind.
func TestNamesChangeHands(t *testing.T) {
	t.Parallel()
	const hold = 3 * time.Second
	r := stacktest.Start(t, stacktest.Options{Projectors: 1, APIs: 1, HoldPeriod: hold})
	api := r.APIs[0]
	alice, bob := newID(), newID()
	call := func(method, path, body string) reply { t.Helper(); return do(t, method, api.URL+path, body) }

	want(t, "alice claims lina", post(t, api, "", alice, "lina"), http.StatusCreated, "registered", "", "")

	// Release.
	got := call("POST", "/v1/releases?wait=30s", jsonBody("username", "lina", "user_id", bob))
	want(t, "bob releases lina", got, http.StatusConflict, "rejected", "not_holder", "")
	got = call("POST", "/v1/releases?wait=30s", jsonBody("username", "nobody", "user_id", bob))
	want(t, "bob releases a name nobody holds", got, http.StatusConflict, "rejected", "not_holder", "")
	relID := newID()
	before := time.Now()
	got = call("POST", "/v1/releases?wait=30s", jsonBody("username", "Lina", "user_id", alice, "request_id", relID))
	want(t, "alice releases lina", got, http.StatusOK, "released", "", "")
	if got.HeldUntil == nil || got.HeldUntil.Before(before.Add(hold-time.Second)) || got.HeldUntil.After(time.Now().Add(hold+time.Second)) {
		t.Errorf("release held_until = %v, want about now+%v", got.HeldUntil, hold)
	}
	if got.Canonical != "lina" || got.UserID != alice || got.RequestID != relID {
		t.Errorf("release answer %+v", got)
	}
	again := call("POST", "/v1/releases?wait=30s", jsonBody("username", "Lina", "user_id", alice, "request_id", relID))
	if again.Code != 200 || again.Status != "released" || !again.HeldUntil.Equal(*got.HeldUntil) {
		t.Errorf("retried release: %d %+v, want the stored decision %+v", again.Code, again, got)
	}
	if g := call("GET", "/v1/releases/"+relID, ""); g.Code != 200 || g.Status != "released" {
		t.Errorf("GET release: %d %+v", g.Code, g)
	}
	if g := call("GET", "/v1/usernames/lina", ""); g.Code != 200 || g.Status != "held" || g.Reason != "held" || g.HeldUntil == nil {
		t.Errorf("GET held name: %d %+v", g.Code, g)
	}

	// Hold: others are refused, the former holder takes it back.
	got = post(t, api, "", bob, "Lina") // the same canonical name (policy 2 refuses "LINA": its I looks like l)
	want(t, "bob claims held lina", got, http.StatusConflict, "rejected", "held", "")
	if got.HeldUntil == nil {
		t.Errorf("held rejection without held_until: %+v", got)
	}
	want(t, "alice reclaims lina", post(t, api, "", alice, "lina"), http.StatusCreated, "registered", "", "")

	// Rename.
	renID := newID()
	got = call("POST", "/v1/renames?wait=30s", jsonBody("user_id", alice, "from", "Lina", "to", "Mira", "request_id", renID))
	if got.Code != http.StatusCreated || got.Status != "renamed" || got.From != "lina" || got.To != "mira" || got.UserID != alice || got.HeldUntil == nil || got.RequestID != renID {
		t.Fatalf("rename: %d %+v", got.Code, got)
	}
	linaFree := *got.HeldUntil
	if g := call("GET", "/v1/renames/"+renID, ""); g.Code != 200 || g.Status != "renamed" || g.To != "mira" {
		t.Errorf("GET rename: %d %+v", g.Code, g)
	}
	if g := call("POST", "/v1/renames?wait=30s", jsonBody("user_id", alice, "from", "Lina", "to", "Mira", "request_id", renID)); g.Status != "renamed" || g.To != "mira" {
		t.Errorf("retried rename: %d %+v", g.Code, g)
	}
	if g := call("GET", "/v1/usernames/mira", ""); g.Code != 200 || g.UserID != alice {
		t.Errorf("GET mira after rename: %d %+v", g.Code, g)
	}
	want(t, "bob claims lina inside its hold", post(t, api, "", bob, "lina"), http.StatusConflict, "rejected", "held", "")

	// Refused renames change nothing.
	want(t, "bob renames mira", call("POST", "/v1/renames?wait=30s", jsonBody("user_id", bob, "from", "mira", "to", "zed")), http.StatusConflict, "rejected", "not_holder", "")
	want(t, "bob claims oskar", post(t, api, "", bob, "oskar"), http.StatusCreated, "registered", "", "")
	want(t, "alice renames mira to taken oskar", call("POST", "/v1/renames?wait=30s", jsonBody("user_id", alice, "from", "mira", "to", "Oskar")), http.StatusConflict, "rejected", "taken", "oskar")
	want(t, "alice renames mira to confusable 0skar (digit zero)", call("POST", "/v1/renames?wait=30s", jsonBody("user_id", alice, "from", "mira", "to", "0skar")), http.StatusConflict, "rejected", "confusable", "oskar")
	// A rename's to is judged by the policy in force, as a claim is:
	// policy 2 refuses the mixed-script оskar (Cyrillic о) outright.
	if g := call("POST", "/v1/renames?wait=30s", jsonBody("user_id", alice, "from", "mira", "to", "\u043eskar")); g.Code != 422 || g.Reason != "invalid" {
		t.Errorf("rename to mixed-script оskar: %d %+v, want 422 invalid", g.Code, g)
	}
	want(t, "alice renames mira to reserved admin", call("POST", "/v1/renames?wait=30s", jsonBody("user_id", alice, "from", "mira", "to", "admin")), http.StatusConflict, "rejected", "reserved", "")
	if g := call("POST", "/v1/renames?wait=30s", jsonBody("user_id", alice, "from", "mira", "to", "bad name")); g.Code != 422 || g.Reason != "invalid" {
		t.Errorf("rename to an invalid name: %d %+v", g.Code, g)
	}
	if g := call("POST", "/v1/renames?wait=30s", jsonBody("user_id", "42", "from", "mira", "to", "zed")); g.Code != 422 {
		t.Errorf("rename with a bad user_id: %d %+v", g.Code, g)
	}
	if g := call("GET", "/v1/usernames/mira", ""); g.Code != 200 || g.UserID != alice {
		t.Errorf("mira after refused renames: %d %+v", g.Code, g)
	}

	// The lifecycle bodies are read as strictly as a claim's (issue 11):
	// a field given twice or in another case is refused, nothing written.
	for _, body := range []string{
		`{"username":"mira","username":"lina","user_id":"` + alice + `"}`,
		`{"USERNAME":"mira","user_id":"` + alice + `"}`,
	} {
		if g := call("POST", "/v1/releases?wait=30s", body); g.Code != 422 || g.Reason != "invalid" {
			t.Errorf("release %s: %d %+v, want 422 invalid", body, g.Code, g)
		}
	}
	if g := call("POST", "/v1/renames?wait=30s", `{"user_id":"`+alice+`","from":"mira","to":"x1","To":"x2"}`); g.Code != 422 {
		t.Errorf("rename with To and to: %d %+v, want 422", g.Code, g)
	}

	// Administrative reservations.
	if g := call("PUT", "/v1/admin/reserved/Quill?wait=30s", ""); g.Code != 200 || g.Status != "reserved" {
		t.Errorf("reserve quill: %d %+v", g.Code, g)
	}
	want(t, "bob claims reserved quill", post(t, api, "", bob, "quill"), http.StatusConflict, "rejected", "reserved", "")
	want(t, "alice renames to reserved quill", call("POST", "/v1/renames?wait=30s", jsonBody("user_id", alice, "from", "mira", "to", "quill")), http.StatusConflict, "rejected", "reserved", "")
	if g := call("GET", "/v1/usernames/quill", ""); g.Code != http.StatusConflict || g.Status != "reserved" || g.Reason != "reserved" { // as for a name on the policy's list (issue 11)
		t.Errorf("GET reserved quill: %d %+v", g.Code, g)
	}
	want(t, "reserve held oskar", call("PUT", "/v1/admin/reserved/oskar?wait=30s", `{"request_id":"`+newID()+`"}`), http.StatusConflict, "rejected", "taken", "oskar")
	if g := call("DELETE", "/v1/admin/reserved/quill?wait=30s", ""); g.Code != 200 || g.Status != "unreserved" {
		t.Errorf("unreserve quill: %d %+v", g.Code, g)
	}
	want(t, "bob claims unreserved quill", post(t, api, "", bob, "quill"), http.StatusCreated, "registered", "", "")

	// Transfers.
	got = call("POST", "/v1/admin/transfers?wait=30s", jsonBody("username", "Oskar", "to_user_id", alice))
	if got.Code != 200 || got.Status != "transferred" || got.Canonical != "oskar" || got.UserID != alice {
		t.Errorf("transfer oskar: %d %+v", got.Code, got)
	}
	if g := call("GET", "/v1/usernames/oskar", ""); g.UserID != alice {
		t.Errorf("oskar after transfer: %+v", g)
	}
	want(t, "transfer a name nobody holds", call("POST", "/v1/admin/transfers?wait=30s", jsonBody("username", "nobody", "to_user_id", alice)), http.StatusConflict, "rejected", "not_held", "")

	// Pending: a zero wait answers 202 with where to look.
	got = call("POST", "/v1/releases?wait=0s", jsonBody("username", "quill", "user_id", bob))
	if got.Code == http.StatusAccepted && !strings.HasPrefix(got.Location, "/v1/releases/") {
		t.Errorf("pending release Location %q", got.Location)
	}

	// Once the hold has passed, the name is free to anyone.
	time.Sleep(time.Until(linaFree.Add(100 * time.Millisecond)))
	if g := call("GET", "/v1/usernames/lina", ""); g.Code != 404 {
		t.Errorf("GET lina after its hold: %d %+v", g.Code, g)
	}
	want(t, "bob claims lina after its hold", post(t, api, "", bob, "lina"), http.StatusCreated, "registered", "", "")

	waitSettled(t, r)
	var locks int
	if err := r.Pool.QueryRow(context.Background(), `SELECT count(*) FROM rename_locks`).Scan(&locks); err != nil || locks != 0 {
		t.Errorf("rename locks left: %d (%v)", locks, err)
	}
}
