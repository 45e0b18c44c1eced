package events

import "slices"

// Reasons a claim is rejected, the values of Decision.Reason. Reasons
// lists them with what each means to the HTTP API; a new reason is added
// to both, and the tests of every package that must handle each reason
// (the HTTP answers, the projector's metrics, `registry rejections`, the
// /ui page) iterate over Reasons, so they fail until it is handled there.
const (
	ReasonTaken           = "taken"            // another user holds the same canonical name
	ReasonConfusable      = "confusable"       // another user holds a name with the same skeleton
	ReasonReserved        = "reserved"         // the name is on the policy's reserved list
	ReasonInvalid         = "invalid"          // the claim or its username breaks the policy
	ReasonRequestConflict = "request_conflict" // the request_id was already used with another payload
	ReasonNotHolder       = "not_holder"       // release or rename by a user who does not hold the name
	ReasonHeld            = "held"             // the name is in its hold period for another user (see Decision.HeldUntil)
	ReasonNotHeld         = "not_held"         // transfer of a name nobody holds
	ReasonLocked          = "locked"           // the name is the from of a rename under way; retry once it ends
	ReasonPolicyUpgrading = "policy_upgrading" // the partition is moving to a new username policy version; retry (not stored, like request_conflict)
)

// Reason is one rejection reason and how the HTTP API answers a decision
// that carries it.
type Reason struct {
	Name string
	// HTTPStatus is the status code of the answer: 409 when the name is
	// not available, 422 when the request itself is at fault.
	HTTPStatus int
	// ConflictsWith is set when the decision names the holder's canonical
	// name (conflicts_with) and the answer shows it.
	ConflictsWith bool
	// Detail is set when the answer carries only request_id, status,
	// reason and detail (the shape of a request at fault), rather than the
	// claim's fields.
	Detail bool
	// Meaning says when the reason is given, for people.
	Meaning string
	// Retryable is set for a rejection that says "not now": it is
	// published but never stored in the ledger (see Stored), so a retry
	// with the same request_id is decided afresh, and the HTTP answer
	// carries Retry-After.
	Retryable bool
}

// Stored reports whether a decision with reason is stored in the request
// ledger: every one but request_conflict and policy_upgrading, which
// answer a command without deciding its request_id.
func Stored(reason string) bool {
	return reason != ReasonRequestConflict && reason != ReasonPolicyUpgrading
}

// Reasons lists every rejection reason, in the order summaries and charts
// list them.
var Reasons = []Reason{
	{Name: ReasonTaken, HTTPStatus: 409, ConflictsWith: true, Meaning: "another user holds the same canonical name"},
	{Name: ReasonConfusable, HTTPStatus: 409, ConflictsWith: true, Meaning: "a different name with the same skeleton is held (even by the same user)"},
	{Name: ReasonReserved, HTTPStatus: 409, Meaning: "the name is on the reserved list"},
	{Name: ReasonInvalid, HTTPStatus: 422, Detail: true, Meaning: "the claim or its username breaks the policy"},
	{Name: ReasonRequestConflict, HTTPStatus: 422, Detail: true, Meaning: "the request_id was already used with a different user_id or username"},
	{Name: ReasonNotHolder, HTTPStatus: 409, Meaning: "a release or rename by a user who does not hold the name"},
	{Name: ReasonHeld, HTTPStatus: 409, Meaning: "the name is in its hold period for its former holder (held_until says until when)"},
	{Name: ReasonNotHeld, HTTPStatus: 409, Meaning: "a transfer of a name nobody holds"},
	{Name: ReasonLocked, HTTPStatus: 409, Meaning: "the name is the from of a rename under way; retry once it ends"},
	{Name: ReasonPolicyUpgrading, HTTPStatus: 503, Detail: true, Retryable: true, Meaning: "the registry is moving to a new username policy version; retry after Retry-After (a retry is decided afresh)"},
}

// LookupReason returns the Reason named name; ok is false for a name this
// build does not know (a decision made by a newer projector, say), which
// callers must not mistake for any known reason.
func LookupReason(name string) (r Reason, ok bool) {
	i := slices.IndexFunc(Reasons, func(r Reason) bool { return r.Name == name })
	if i < 0 {
		return Reason{}, false
	}
	return Reasons[i], true
}

// ReasonNames returns the names of Reasons, in order.
func ReasonNames() []string {
	names := make([]string, len(Reasons))
	for i, r := range Reasons {
		names[i] = r.Name
	}
	return names
}
