package httpwire

import (
	"net/http"
	"testing"

	"github.com/usernameregistry/registry/events"
)

// TestAnswerForEveryReason: every rejection reason in events.Reasons is
// answered with its own status code and shape (status rejected, or error
// for a 5xx one such as policy_upgrading: nothing was decided), and a
// reason this build does not know is answered 500, never as one of the
// known answers.
func TestAnswerForEveryReason(t *testing.T) {
	t.Parallel()
	for _, r := range events.Reasons {
		d := &events.Decision{RequestID: "r", UserID: "u", Username: "Alice", Canonical: "alice", Outcome: events.OutcomeRejected,
			Reason: r.Name, Conflicts: "alice", Detail: "why"}
		status, body := AnswerFor(d)
		want := events.OutcomeRejected
		if r.HTTPStatus >= 500 {
			want = "error"
		}
		if status != r.HTTPStatus || body.Reason != r.Name || body.Status != want {
			t.Errorf("%s: %d %+v, want %d %s", r.Name, status, body, r.HTTPStatus, want)
		}
		if (body.ConflictsWith != "") != r.ConflictsWith || (body.Detail != "") != r.Detail || (body.Username == "") != r.Detail {
			t.Errorf("%s: body %+v does not have the reason's shape %+v", r.Name, body, r)
		}
	}
	status, body := AnswerFor(&events.Decision{RequestID: "r", Outcome: events.OutcomeRejected, Reason: "expired"})
	if status != http.StatusInternalServerError || body.Reason != "expired" || body.Detail == "" {
		t.Errorf("unknown reason: %d %+v, want 500 naming it", status, body)
	}
	if status, _ := AnswerFor(&events.Decision{RequestID: "r", Outcome: events.OutcomeRegistered}); status != http.StatusOK {
		t.Errorf("registered: %d", status)
	}
}
