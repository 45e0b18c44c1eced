package projection

import (
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
)

// The rules for names that change hands: release, rename (three steps, a
// saga whose next step each step's outbox writes to the claims topic),
// runtime reservations and transfers. Like the claim rule, each decides
// from its own partition's state and its own record only; times come from
// record timestamps, and the hold period from the command record.

// stepNamespace derives the request_ids of a rename's steps 2 and 3 from
// the rename's own request_id, so a redelivered step is recognised.
var stepNamespace = uuid.MustParse("9c0f7e52-7a8d-4f4e-8f0b-3e6a1d2c5b47")

// StepID is the request_id of step ("to" or "finish") of the rename with
// request_id renameID.
func StepID(renameID, step string) string {
	return uuid.NewSHA1(stepNamespace, []byte(renameID+"/"+step)).String()
}

// maxHoldSeconds bounds a command's hold period (100 years), so
// held_until stays a valid timestamp whatever a producer writes.
const maxHoldSeconds = 100 * 365 * 24 * 3600

// checkCommand checks what a command other than a claim carries beyond a
// claim's fields, normalizing a rename's to under in's policy (the version
// in force, as for the claim's own name); it returns why the command is
// invalid, or "". With translated (the what-if replay deciding a command
// made under another policy version) the canonical forms and keys the
// rename carries are not compared, as checkClaim does not compare the
// record's own.
func checkCommand(in *Claim, translated bool) string {
	if in.HoldSeconds < 0 || in.HoldSeconds > maxHoldSeconds {
		return fmt.Sprintf("hold_seconds %d is outside 0..%d", in.HoldSeconds, maxHoldSeconds)
	}
	switch in.Type {
	case events.TypeRenameSubmitted, events.TypeRenameTargetClaimed, events.TypeRenameFinishing:
	default:
		return ""
	}
	r := in.Rename
	if r == nil {
		return "a rename step carries no rename"
	}
	if _, err := uuid.Parse(r.RequestID); err != nil {
		return fmt.Sprintf("rename request_id %q is not a UUID", r.RequestID)
	}
	if in.Type != events.TypeRenameSubmitted {
		return ""
	}
	if r.RequestID != in.RequestID {
		return "a rename's first step carries another request_id in its rename"
	}
	to, err := in.Policy.Normalize(r.To)
	if err != nil {
		return "to: " + err.Error()
	}
	switch {
	case r.From != in.Username || !translated && (r.FromCanonical != in.Name.Canonical || r.FromKey != in.Name.Key):
		return "rename's from does not match the record's username"
	case !translated && (r.ToCanonical != to.Canonical || r.ToKey != to.Key):
		return "rename's to canonical form or key does not match the username policy"
	case to.Key == in.Name.Key:
		return "to is the same name as from, or confusable with it"
	}
	in.To = to
	return ""
}

// Admin reports whether in is an administrative command (reserve,
// unreserve, transfer): the projector refuses one without a valid proof
// (projector's checkAdminProof) as invalid.
func (in *Claim) Admin() bool {
	switch in.Type {
	case events.TypeReservationSubmitted, events.TypeUnreservation, events.TypeTransferSubmitted:
		return true
	}
	return isUpgrade(in.Type) // the policy upgrade's records are signed like them
}

// AdminProblem is the decider's gate for administrative commands: why rec
// (one of them) must be decided invalid, or "" when its events.HeaderProof
// verifies under keys. It depends only on the record and the keys, so the
// projector and the replay audit decide alike.
func AdminProblem(keys *events.AdminKeys, rec *kgo.Record) string {
	if keys == nil {
		return "administrative command refused: this registry holds no admin key (--admin-key-file)"
	}
	if err := keys.Verify(rec); err != nil {
		return "administrative command refused: " + err.Error()
	}
	return ""
}

// heldUntil is when a hold of in's hold period starts at in's record
// ends; nil when the period is 0.
func (in *Claim) heldUntil() *time.Time {
	if in.HoldSeconds == 0 {
		return nil
	}
	t := in.Timestamp.Add(time.Duration(in.HoldSeconds) * time.Second).UTC()
	return &t
}

// holds reports whether in's user holds in's name exactly (as its
// ordinary holder or as a member of its grandfathered group).
func (st *State) holds(in *Claim) (*Holder, bool) {
	h := st.holderOf(in.Name.Key, in.Name.Canonical)
	return h, h != nil && h.UserID == in.UserID
}

// decideRelease: the holder gives the name up, into a hold for itself.
func decideRelease(st *State, in *Claim) *events.Decision {
	if _, ok := st.holds(in); !ok {
		return in.rejection(events.ReasonNotHolder, "", "")
	}
	if st.Locks[in.Name.Key] != nil {
		return in.rejection(events.ReasonLocked, "", "")
	}
	d := in.base(events.OutcomeReleased)
	d.HeldUntil = in.heldUntil()
	return d
}

// decideRename is step 1, in from's partition: from must be the user's and
// not in another rename; it is locked until step 3.
func decideRename(st *State, in *Claim) *events.Decision {
	var d *events.Decision
	switch _, ok := st.holds(in); {
	case !ok:
		d = in.rejection(events.ReasonNotHolder, "", "")
	case st.Locks[in.Name.Key] != nil:
		d = in.rejection(events.ReasonLocked, "", "")
	default:
		d = in.base(events.OutcomeRenaming)
	}
	d.From, d.To = in.Name.Canonical, in.To.Canonical
	return d
}

// decideFinish is step 3, in from's partition: with step 2's verdict, the
// rename's final decision, under the rename's own request_id. A step 3
// without its lock cannot come from a step 2 (Decide answers a repeat from
// the ledger); it is refused as invalid under its own request_id.
func decideFinish(st *State, in *Claim) *events.Decision {
	r := in.Rename
	lock := st.Locks[in.Name.Key]
	if lock == nil || lock.RequestID != r.RequestID || st.Requests[r.RequestID] == nil {
		return in.rejection(events.ReasonInvalid, "no rename under way for this step", "")
	}
	first := st.Requests[r.RequestID].Decision
	d := &events.Decision{
		RequestID: r.RequestID, UserID: in.UserID, Username: first.Username, Canonical: in.Name.Canonical,
		ClaimPartition: in.Partition, ClaimOffset: in.Offset, PolicyVersion: in.Policy.Version(),
		Command: events.CommandRename, From: r.FromCanonical, To: r.ToCanonical, ToUsername: first.ToUsername,
		Step: 3, Caller: first.Caller,
	}
	if r.Outcome == events.OutcomeRegistered {
		d.Outcome, d.HeldUntil = events.OutcomeRenamed, in.heldUntil()
		return d
	}
	d.Outcome, d.Reason, d.Conflicts, d.HeldUntil = events.OutcomeRejected, r.Reason, r.Conflicts, r.HeldUntil
	return d
}

// decideReserve reserves a name at runtime, unless someone holds it.
func decideReserve(st *State, in *Claim) *events.Decision {
	if h := st.Holders[in.Name.Key]; h != nil {
		return in.rejection(events.ReasonTaken, "", h.Canonical)
	}
	if ms := st.Members[in.Name.Key]; len(ms) > 0 {
		return in.rejection(events.ReasonTaken, "", ms[0].Canonical)
	}
	d := in.base(events.OutcomeReserved)
	d.RegisteredAt = &in.Timestamp
	return d
}

// decideTransfer gives a held name to the command's user (the new holder).
func decideTransfer(st *State, in *Claim) *events.Decision {
	h := st.holderOf(in.Name.Key, in.Name.Canonical)
	switch {
	case h == nil:
		return in.rejection(events.ReasonNotHeld, "", "")
	case st.Locks[in.Name.Key] != nil:
		return in.rejection(events.ReasonLocked, "", "")
	}
	d := in.base(events.OutcomeTransferred)
	d.PreviousUserID, d.HolderRequestID, d.RegisteredAt = h.UserID, in.RequestID, &in.Timestamp
	return d
}

// next returns the rename step that follows in's decision d: step 2 after
// a lock, step 3 after step 2 whatever its verdict. Nil for everything
// else, including a step 1 that was refused (nothing was locked).
func next(in *Claim, d *events.Decision) (*kgo.Record, error) {
	r := in.Rename
	if r == nil {
		return nil, nil
	}
	step := *r
	c := &events.ClaimSubmitted{UserID: in.UserID, PolicyVersion: in.Policy.Version(), SubmittedAt: in.Timestamp, Caller: in.Caller,
		HoldSeconds: in.HoldSeconds, Rename: &step}
	switch {
	case in.Type == events.TypeRenameSubmitted && d.Outcome == events.OutcomeRenaming:
		c.RequestID, c.Username, c.Canonical, c.Key = StepID(r.RequestID, "to"), r.To, r.ToCanonical, r.ToKey
		return events.CommandRecord(events.TypeRenameTargetClaimed, c)
	case in.Type == events.TypeRenameTargetClaimed:
		c.RequestID, c.Username, c.Canonical, c.Key = StepID(r.RequestID, "finish"), r.From, r.FromCanonical, r.FromKey
		step.Outcome, step.Reason, step.Conflicts, step.HeldUntil = d.Outcome, d.Reason, d.Conflicts, d.HeldUntil
		if d.Outcome == events.OutcomeRegistered {
			step.Reason, step.Conflicts, step.HeldUntil = "", "", nil
		} else if d.Reason == events.ReasonRequestConflict || d.Reason == events.ReasonInvalid {
			step.Reason = events.ReasonInvalid // to could not be claimed for a reason of the step itself
		}
		return events.CommandRecord(events.TypeRenameFinishing, c)
	}
	return nil, nil
}
