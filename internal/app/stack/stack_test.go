package stack_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/app/stack/stacktest"
)

// TestConcurrentClaims: 2,000 concurrent claims over 100 names by
// different users, 10% of them repeats of an earlier request_id sent to
// the other API node. Exactly one claim wins each name, every request gets
// one answer, repeats get the same answer, and PostgreSQL, the ledger and
// the registrations topic agree.
func TestConcurrentClaims(t *testing.T) {
	t.Parallel()
	r := stacktest.Start(t, stacktest.Options{Projectors: 1, APIs: 2})
	type claim struct{ requestID, userID, name string }
	var all []claim
	for i := range 1800 {
		all = append(all, claim{newID(), newID(), fmt.Sprintf("user%03d", i%100)})
	}
	for i := range 200 {
		all = append(all, all[i*9]) // a retry of an earlier request, same payload
	}
	replies := make([]reply, len(all))
	var wg sync.WaitGroup
	for i, c := range all {
		wg.Go(func() { replies[i] = post(t, r.APIs[i%2], c.requestID, c.userID, c.name) })
	}
	wg.Wait()

	byRequest := map[string]reply{}
	winners := map[string]string{} // canonical → request_id
	for i, rep := range replies {
		c := all[i]
		if rep.Code != http.StatusCreated && rep.Code != http.StatusOK && rep.Code != http.StatusConflict {
			t.Fatalf("claim %d (%s for %s): answer %d %+v", i, c.name, c.requestID, rep.Code, rep)
		}
		if prev, ok := byRequest[c.requestID]; ok && (prev.Status != rep.Status || prev.Reason != rep.Reason || prev.Canonical != rep.Canonical) {
			t.Errorf("request %s answered %+v then %+v", c.requestID, prev, rep)
		}
		byRequest[c.requestID] = rep
		if rep.Status == events.OutcomeRegistered {
			if w, ok := winners[rep.Canonical]; ok && w != c.requestID {
				t.Errorf("%s granted to both %s and %s", rep.Canonical, w, c.requestID)
			}
			winners[rep.Canonical] = c.requestID
		} else if rep.Reason != events.ReasonTaken || rep.ConflictsWith != rep.Canonical {
			t.Errorf("loser %s answered %+v, want taken with conflicts_with", c.requestID, rep)
		}
	}
	if len(winners) != 100 {
		t.Errorf("%d names registered, want 100", len(winners))
	}

	waitSettled(t, r)
	led := checkAgreement(t, r)
	if len(led) != 1800 {
		t.Errorf("ledger holds %d requests, want 1800", len(led))
	}
	held := holders(t, r)
	if len(held) != 100 {
		t.Errorf("projection holds %d names, want 100", len(held))
	}
	for canonical, id := range winners {
		if held[canonical].requestID != id {
			t.Errorf("%s: API said %s won, projection says %v", canonical, id, held[canonical])
		}
	}
	outcomes := map[string]string{}
	for k, row := range led {
		outcomes[k.requestID] = row.outcome
	}
	for id, rep := range byRequest {
		if outcomes[id] != rep.Status {
			t.Errorf("request %s: API said %s, ledger says %s", id, rep.Status, outcomes[id])
		}
	}
}

// TestCollisions covers canonical and confusable collisions, a user
// claiming its own name again, reserved names and the lookups.
func TestCollisions(t *testing.T) {
	t.Parallel()
	r := stacktest.Start(t, stacktest.Options{Projectors: 1, APIs: 1})
	api := r.APIs[0]
	alice, mallory := newID(), newID()

	first := post(t, api, newID(), alice, "Alice")
	want(t, "first claim", first, http.StatusCreated, "registered", "", "")
	if first.Canonical != "alice" || first.Username != "Alice" || first.UserID != alice {
		t.Errorf("first claim body %+v", first)
	}
	want(t, "same name, other case", post(t, api, newID(), mallory, "ALiCE"), http.StatusConflict, "rejected", "taken", "alice")
	want(t, "fullwidth", post(t, api, newID(), mallory, "ＡＬｉＣＥ"), http.StatusConflict, "rejected", "taken", "alice")
	want(t, "digit one for l", post(t, api, newID(), mallory, "a1ice"), http.StatusConflict, "rejected", "confusable", "alice")
	want(t, "holder again", post(t, api, newID(), alice, "alice"), http.StatusOK, "registered", "", "")
	want(t, "holder, confusable spelling", post(t, api, newID(), alice, "a1ice"), http.StatusConflict, "rejected", "confusable", "alice")

	retryID := newID()
	want(t, "bob", post(t, api, retryID, mallory, "bob"), http.StatusCreated, "registered", "", "")
	want(t, "bob retried", post(t, api, retryID, mallory, "bob"), http.StatusOK, "registered", "", "")

	reserved := post(t, api, newID(), mallory, "Admin")
	want(t, "reserved", reserved, http.StatusConflict, "rejected", "reserved", "")

	got := do(t, "GET", api.URL+"/v1/usernames/carol", "")
	if got.Code != http.StatusNotFound {
		t.Errorf("lookup of an unheld name: %d %+v", got.Code, got)
	}
	got = do(t, "GET", api.URL+"/v1/usernames/%EF%BC%A1lice", "") // "Ａlice"
	if got.Code != http.StatusOK || got.UserID != alice || got.Canonical != "alice" || got.Username != "Alice" || got.RequestID != first.RequestID {
		t.Errorf("lookup of alice: %d %+v", got.Code, got)
	}
	got = do(t, "GET", api.URL+"/v1/claims/"+reserved.RequestID, "")
	if got.Code != http.StatusOK || got.Reason != "reserved" || got.RequestID != reserved.RequestID {
		t.Errorf("claim lookup: %d %+v", got.Code, got)
	}
	waitSettled(t, r)
	checkAgreement(t, r)
}

func want(t *testing.T, what string, got reply, code int, status, reason, conflictsWith string) {
	t.Helper()
	if got.Code != code || got.Status != status || got.Reason != reason || got.ConflictsWith != conflictsWith {
		t.Errorf("%s: got %d %+v, want %d status=%s reason=%s conflicts_with=%s", what, got.Code, got, code, status, reason, conflictsWith)
	}
}

// TestCleartextHTTP2: a client speaking HTTP/2 with prior knowledge (h2c)
// gets the same answers as one speaking HTTP/1.1, many claims sharing one
// connection.
func TestCleartextHTTP2(t *testing.T) {
	t.Parallel()
	r := stacktest.Start(t, stacktest.Options{APIs: 1})
	r.StartProjector()
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			body := claimBody(newID(), newID(), fmt.Sprintf("h2c-%d", i%10))
			resp, err := client.Post(r.APIs[0].URL+"/v1/claims?wait=10s", "application/json", strings.NewReader(body))
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			if resp.ProtoMajor != 2 {
				t.Errorf("answered over %s, want HTTP/2", resp.Proto)
			}
			if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusConflict {
				t.Errorf("claim over h2c answered %d", resp.StatusCode)
			}
		})
	}
	wg.Wait()
	if h := holders(t, r); len(h) != 10 {
		t.Errorf("%d names held, want 10", len(h))
	}
}
