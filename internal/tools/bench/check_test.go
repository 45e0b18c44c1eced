package bench

import (
	"strings"
	"testing"

	"github.com/google/uuid"
)

var (
	userA = uuid.MustParse("7d3f2b0e-5a61-4c1e-9f5b-2b8c1d4e6a01")
	userB = uuid.MustParse("c4a8e913-2f7d-4b6a-8e15-93d0f2a7b502")
)

func req(n byte) uuid.UUID {
	return uuid.UUID{0x0b, 0x6f, 0x2a, 0x51, 0x8c, 0x3e, 0x4d, 0x7a, 0x9e, 0x21, 0x5f, 0x4c, 0x3b, 0x2a, 0x1d, n}
}

func registered(id, user uuid.UUID, code int, typed, canonical string) Answer {
	return Answer{RequestID: id, UserID: user, Username: typed, Code: code, Status: "registered", Canonical: canonical}
}

func rejected(id, user uuid.UUID, code int, typed, reason string) Answer {
	return Answer{RequestID: id, UserID: user, Username: typed, Code: code, Status: "rejected", Reason: reason}
}

func check(answers ...Answer) CheckResult {
	c := NewChecker()
	for _, a := range answers {
		c.Record(a)
	}
	return c.Result()
}

// TestCheckerAcceptsTheContract replays the README's examples and the
// answers that carry no decision: none of them breaks a promise.
func TestCheckerAcceptsTheContract(t *testing.T) {
	t.Parallel()
	r := check(
		registered(req(1), userA, 201, "alice", "alice"),
		registered(req(1), userA, 200, "alice", "alice"), // retry
		registered(req(2), userA, 200, "Alice", "alice"), // the holder again, new request_id
		rejected(req(3), userB, 409, "ALICE", "taken"),
		rejected(req(4), userB, 409, "аlice", "confusable"),
		rejected(req(5), userB, 409, "Admin", "reserved"),
		Answer{RequestID: req(6), UserID: userB, Username: "bob", Code: 202, Status: "pending"},
		registered(req(6), userB, 201, "bob", "bob"),
		Answer{RequestID: req(7), UserID: userA, Username: "bob", Code: 503, Status: "error", Reason: "overloaded"},
		rejected(req(7), userA, 409, "bob", "taken"),
		rejected(req(7), userA, 409, "bob", "taken"),
	)
	want := CheckResult{Requests: 7, Granted: 2}
	if !r.OK(false) || r.Requests != want.Requests || r.Granted != want.Granted || len(r.Examples) != 0 {
		t.Fatalf("got %+v, want %+v and OK", r, want)
	}
}

func TestCheckerFindsANameGrantedTwice(t *testing.T) {
	t.Parallel()
	r := check(
		registered(req(1), userA, 201, "alice", "alice"),
		registered(req(2), userB, 201, "Alice", "alice"),
	)
	if r.DuplicateGrants != 1 || r.OK(false) {
		t.Fatalf("got %+v, want one duplicate grant and not OK", r)
	}
	if !r.OK(true) {
		t.Errorf("--expect-duplicates should tolerate a duplicate grant: %+v", r)
	}
	if len(r.Examples) != 1 || !strings.Contains(r.Examples[0], `"alice" to `+userA.String()) {
		t.Errorf("examples %q do not name the holders", r.Examples)
	}
}

// TestCheckerFindsLookAlikesGrantedTwice: two canonical names with one
// skeleton are one name as far as holders go, even for the same user.
func TestCheckerFindsLookAlikesGrantedTwice(t *testing.T) {
	t.Parallel()
	for _, second := range []uuid.UUID{userA, userB} {
		r := check(
			registered(req(1), userA, 201, "alice", "alice"),
			registered(req(2), second, 201, "a1ice", "a1ice"), // digit one
		)
		if r.DuplicateGrants != 1 || r.Granted != 2 || r.OK(false) {
			t.Errorf("second holder %s: got %+v, want one duplicate grant", second, r)
		}
	}
}

func TestCheckerFindsInconsistentAnswers(t *testing.T) {
	t.Parallel()
	r := check(
		registered(req(1), userA, 201, "carol", "carol"),
		Answer{RequestID: req(1), UserID: userA, Username: "carol", Code: 202, Status: "pending"},
		rejected(req(1), userA, 409, "carol", "taken"),
		rejected(req(1), userA, 422, "carol", "request_conflict"),
	)
	if r.Inconsistent != 1 || r.DuplicateGrants != 0 || r.OK(true) {
		t.Fatalf("got %+v, want one inconsistent request_id, failing even with expected duplicates", r)
	}
	if len(r.Examples) != 1 || !strings.Contains(r.Examples[0], "registered/, then rejected/taken") {
		t.Errorf("examples %q", r.Examples)
	}
}
