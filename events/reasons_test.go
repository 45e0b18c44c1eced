package events

import "testing"

// TestReasonsAreDistinctAndComplete: every reason constant is listed once,
// with a status code the API can answer, and nothing else is.
func TestReasonsAreDistinctAndComplete(t *testing.T) {
	want := map[string]bool{ReasonTaken: true, ReasonConfusable: true, ReasonReserved: true, ReasonInvalid: true, ReasonRequestConflict: true,
		ReasonNotHolder: true, ReasonHeld: true, ReasonNotHeld: true, ReasonLocked: true, ReasonPolicyUpgrading: true}
	seen := map[string]bool{}
	for _, r := range Reasons {
		if !want[r.Name] || seen[r.Name] {
			t.Errorf("reason %q listed but not a constant, or listed twice", r.Name)
		}
		seen[r.Name] = true
		if r.HTTPStatus != 409 && r.HTTPStatus != 422 && !(r.Retryable && r.HTTPStatus == 503) {
			t.Errorf("reason %q answers %d", r.Name, r.HTTPStatus)
		}
		if r.Retryable == Stored(r.Name) && r.Name != ReasonRequestConflict {
			t.Errorf("reason %q: retryable %v but stored %v", r.Name, r.Retryable, Stored(r.Name))
		}
		if got, ok := LookupReason(r.Name); !ok || got != r {
			t.Errorf("LookupReason(%q) = %+v, %v", r.Name, got, ok)
		}
	}
	if len(seen) != len(want) {
		t.Errorf("Reasons lists %d of the %d reason constants", len(seen), len(want))
	}
	if _, ok := LookupReason("expired"); ok {
		t.Error("an unknown reason was found")
	}
}
