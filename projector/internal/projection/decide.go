package projection

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
)

// positionNamespace derives a request_id for a claim record that carries no
// usable one, from its place in the log, so that the decision (and its
// ledger row) is the same live and on replay.
var positionNamespace = uuid.MustParse("5b1f4a36-2f0e-4c0a-9d55-8a2b2f6f7c11")

// positionTopic is the topic name hashed into a derived request_id. It is
// the default claims topic's name, fixed here rather than read from the
// configuration: a registry whose claims topic has another name derives
// the same ids, so a log copied between topics of different names
// replays to the same decisions, byte for byte (TestPositionIDIgnoresTopic).
const positionTopic = "claims"

// Claim is one claims record, parsed and checked against the policy.
type Claim struct {
	Partition int32
	Offset    int64
	Timestamp time.Time
	Key       []byte

	RequestID string // a UUID in canonical form: the claim's, or derived from the position
	UserID    string
	Username  string
	Caller    string            // the service that wrote the claim, as recorded in it
	Name      username.Username // valid only when Invalid == ""
	Invalid   string            // why the claim is invalid; empty when it is valid
	Policy    *username.Policy  // the policy that decides the claim

	// Type is the record's command type (one of events.CommandTypes);
	// TypeClaimSubmitted for a record that could not be read.
	Type string
	// HoldSeconds is the hold period the command carries (release, rename).
	HoldSeconds int64
	// Rename is a rename step's saga data; To is its to name, valid in
	// step 1 when Invalid == "".
	Rename *events.RenameStep
	To     username.Username
	// Version is the policy version the record says it was made under (0
	// when it could not be read).
	Version int
	// Upgrade and Carry are a policy upgrade record's data (upgrade.go).
	Upgrade *events.PolicyChange
	Carry   *events.Carry
	// Shadow is a ShadowFollowing's data (shadow.go), its ids in
	// canonical form.
	Shadow *events.ShadowFollow
}

// Rules are what a claims record is checked against: the partition count
// and the username policy in force.
type Rules struct {
	Partitions int
	Policy     *username.Policy
	// Translate decides a claim made under another policy version as if
	// it had been made under this one, from the username as typed: the
	// what-if replay (registry replay --policy-version). The name's key
	// and partition may differ under this version, so they are not
	// checked. The projector never translates.
	Translate bool
	// Upgraded is set for a partition that activated a policy version
	// (registry policy upgrade): a release, rename or transfer of a name
	// the policy refuses is read as Policy.Inspect reads it, since the
	// upgrade may have carried such a name to a holder (CarryName).
	// Before any activation such a command is invalid, as it always was.
	Upgraded bool
}

// Parse turns a record into a Claim. It never fails: whatever is wrong
// with the record becomes the reason it is invalid. The checks depend only
// on the record, the partition count and the pinned policy, so a replay
// reaches the same verdict.
func Parse(r *kgo.Record, ru Rules) Claim {
	in := Claim{Partition: r.Partition, Offset: r.Offset, Timestamp: r.Timestamp.UTC(), Key: r.Key, Policy: ru.Policy, Type: events.TypeClaimSubmitted}
	typ, c, err := events.DecodeCommand(r)
	if err != nil {
		in.RequestID = positionID(r.Partition, r.Offset)
		in.Invalid = fmt.Sprintf("claim record could not be read: %v", err)
		return in
	}
	in.Type, in.HoldSeconds, in.Rename, in.Version = typ, c.HoldSeconds, c.Rename, c.PolicyVersion
	in.UserID, in.Username, in.Caller = storable(c.UserID), storable(c.Username), storable(c.Caller)
	id, err := uuid.Parse(c.RequestID)
	if err != nil {
		in.RequestID = positionID(r.Partition, r.Offset)
		in.Invalid = fmt.Sprintf("request_id %q is not a UUID", c.RequestID)
		return in
	}
	in.RequestID = id.String()
	if isUpgrade(typ) {
		in.Invalid = checkUpgrade(&in, c, r, ru)
		return in
	}
	if typ == events.TypeShadowFollowing {
		in.Invalid = checkShadow(&in, c, r, ru)
		return in
	}
	in.Invalid = checkClaim(&in, c, r, ru)
	if in.Invalid == "" {
		in.Invalid = checkCommand(&in, ru.Translate && c.PolicyVersion != ru.Policy.Version())
	}
	return in
}

// checkClaim validates a decoded claim and fills in.Name; it returns why the
// claim is invalid, or "".
func checkClaim(in *Claim, c *events.ClaimSubmitted, r *kgo.Record, ru Rules) string {
	if admin := in.Type == events.TypeReservationSubmitted || in.Type == events.TypeUnreservation; !admin || c.UserID != "" {
		uid, err := uuid.Parse(c.UserID)
		if err != nil {
			return fmt.Sprintf("user_id %q is not a UUID", c.UserID)
		}
		in.UserID = uid.String()
	}
	name, err := ru.Policy.Normalize(c.Username)
	if err != nil && ru.Upgraded && in.holderCommand() {
		if u, ok := ru.Policy.Inspect(c.Username); ok {
			name, err = u, nil
		}
	}
	if err != nil {
		return err.Error()
	}
	in.Name = name
	partitions := ru.Partitions
	switch {
	case ru.Translate && c.PolicyVersion != ru.Policy.Version():
		return ""
	case c.PolicyVersion != ru.Policy.Version():
		return fmt.Sprintf("claim was made under username policy version %d; this registry decides under version %d", c.PolicyVersion, ru.Policy.Version())
	case c.Canonical != name.Canonical || c.Key != name.Key || string(r.Key) != name.Key:
		return "claim's canonical form or key does not match the username policy"
	case events.Partition(r.Key, partitions) != r.Partition:
		return fmt.Sprintf("claim is in partition %d but its key belongs in partition %d: produce with the murmur2 partitioner", r.Partition, events.Partition(r.Key, partitions))
	}
	return ""
}

// holderCommand reports whether in acts on a name someone holds (release,
// the from of a rename, transfer), which may be a carried name the policy
// refuses.
func (in *Claim) holderCommand() bool {
	switch in.Type {
	case events.TypeReleaseSubmitted, events.TypeRenameSubmitted, events.TypeRenameFinishing, events.TypeTransferSubmitted:
		return true
	}
	return false
}

// storable replaces NUL, which PostgreSQL text cannot hold, so a claim
// carrying one is decided invalid instead of failing its batch forever.
// The same input always maps to the same string, so replay agrees.
func storable(s string) string {
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}

func positionID(partition int32, offset int64) string {
	return uuid.NewSHA1(positionNamespace, fmt.Appendf(nil, "%s/%d/%d", positionTopic, partition, offset)).String()
}

// Outcome is what deciding one command produced.
type Outcome struct {
	// Next is the rename's next step, or the shadow follow-up of a
	// release, rename or transfer of a name with a shadow (shadow.go),
	// to be produced to the claims topic by the same transaction's
	// outbox; nil for every other decision.
	Next *kgo.Record

	// Decision and Value are the decision to publish and its exact bytes.
	// For a copy they are the first decision's.
	Decision *events.Decision
	Value    []byte
	// Copy is set when the claim repeats a decided request_id with the
	// same payload: its decision is the stored one, and nothing changes.
	Copy bool
	// Change is what the decision did to the partition's projection (see
	// Fold); empty for a copy and for request_conflict.
	Change Change
}

// New reports whether the outcome is a new decision (counted, and stored
// unless it is a request_conflict) rather than a copy.
func (o *Outcome) New() bool { return !o.Copy }

// errDecision is returned only for a decision that cannot be encoded,
// which is a bug, not a property of the claim.
var errDecision = errors.New("encoding decision")

// Decide returns the decision for in given st, and folds it into st. It
// is the registry's only decision rule; the projector, the replay audit
// and the generator all call it. The decision depends on st only through
// what the fold put there, so a state rebuilt from the decisions decides
// the next claim alike.
func Decide(st *State, in *Claim) (Outcome, error) {
	if in.Type == events.TypeRenameFinishing && in.Invalid == "" {
		if prev := st.Requests[in.Rename.RequestID]; prev != nil && events.Final(prev.Decision.Outcome) {
			return Outcome{Decision: prev.Decision, Value: prev.Value, Copy: true}, nil // step 3 again
		}
	} else if prev, ok := st.Requests[in.RequestID]; ok {
		if prev.UserID == in.UserID && prev.Username == in.Username && samePayload(prev, in) {
			return Outcome{Decision: prev.Decision, Value: prev.Value, Copy: true}, nil
		}
		d := in.rejection(events.ReasonRequestConflict, "request_id was already used with a different username or user_id", "")
		out, err := encode(d)
		if err == nil {
			out.Next, err = next(in, d)
		}
		return out, err
	}
	if d := upgradeGate(st, in); d != nil { // published, not stored: decided afresh when retried
		out, err := encode(d)
		if err == nil {
			out.Next, err = next(in, d)
		}
		return out, err
	}
	d, err := decideFresh(st, in)
	if err != nil {
		return Outcome{}, err
	}
	follow, err := shadowFollowUp(st, in, d) // before the fold: it reads the holder the decision drops or replaces
	if err != nil {
		return Outcome{}, fmt.Errorf("%w: %w", errDecision, err)
	}
	out, err := encode(d)
	if err != nil {
		return out, err
	}
	if out.Change, err = Fold(out.Decision, out.Value, in.Key); err != nil {
		return out, fmt.Errorf("%w: %w", errDecision, err)
	}
	st.Apply(out.Change)
	if out.Next, err = next(in, d); err != nil {
		return out, fmt.Errorf("%w: %w", errDecision, err)
	}
	if follow != nil {
		if out.Next != nil { // a release, transfer or rename's step 3 has no next step
			return out, fmt.Errorf("%w: %s %s has both a next step and a shadow follow-up", errDecision, in.Type, in.RequestID)
		}
		out.Next = follow
	}
	return out, nil
}

// samePayload reports whether the stored entry prev decided the same
// command as in (user and username are compared by the caller).
func samePayload(prev *Entry, in *Claim) bool {
	if prev.Decision == nil {
		return true
	}
	return prev.Decision.Command == in.command() && prev.Decision.ToUsername == in.toUsername()
}

// decideFresh decides a request_id seen for the first time: one rule per
// command type.
func decideFresh(st *State, in *Claim) (*events.Decision, error) {
	if in.Invalid != "" {
		return in.rejection(events.ReasonInvalid, in.Invalid, ""), nil
	}
	if isUpgrade(in.Type) {
		return decideUpgrade(st, in)
	}
	return decideCommand(st, in), nil
}

// decideCommand decides a valid command other than the upgrade's.
func decideCommand(st *State, in *Claim) *events.Decision {
	switch in.Type {
	case events.TypeReleaseSubmitted:
		return decideRelease(st, in)
	case events.TypeRenameSubmitted:
		return decideRename(st, in)
	case events.TypeRenameFinishing:
		return decideFinish(st, in)
	case events.TypeReservationSubmitted:
		return decideReserve(st, in)
	case events.TypeUnreservation:
		return in.base(events.OutcomeUnreserved)
	case events.TypeTransferSubmitted:
		return decideTransfer(st, in)
	case events.TypeShadowFollowing:
		return decideShadow(st, in)
	default: // a claim, or a rename's step 2 (claiming to)
		return decideClaim(st, in)
	}
}

// decideClaim is the claim rule: the first valid claim for a key wins it,
// unless the name is reserved (by the policy or at runtime) or in another
// user's hold.
func decideClaim(st *State, in *Claim) *events.Decision {
	if in.Policy.Reserved(in.Name) || st.Reserved[in.Name.Key] != nil {
		return in.rejection(events.ReasonReserved, "", "")
	}
	if ms := st.Members[in.Name.Key]; len(ms) > 0 { // a grandfathered group: nobody new gets the key
		if m := st.member(in.Name.Key, in.Name.Canonical); m != nil && m.UserID == in.UserID {
			return in.registration(m.RequestID, m.RegisteredAt)
		} else if m != nil {
			return in.rejection(events.ReasonTaken, "", m.Canonical)
		}
		return in.rejection(events.ReasonConfusable, "", ms[0].Canonical)
	}
	h, held := st.Holders[in.Name.Key]
	switch {
	case !held:
		if hold := st.Holds[in.Name.Key]; hold != nil && hold.UserID != in.UserID && in.Timestamp.Before(hold.HeldUntil) {
			d := in.rejection(events.ReasonHeld, "", "")
			d.HeldUntil = &hold.HeldUntil
			return d
		}
		return in.registration(in.RequestID, in.Timestamp)
	case h.UserID == in.UserID && h.Canonical == in.Name.Canonical:
		return in.registration(h.RequestID, h.RegisteredAt)
	case h.Canonical == in.Name.Canonical:
		return in.rejection(events.ReasonTaken, "", h.Canonical)
	default:
		return in.rejection(events.ReasonConfusable, "", h.Canonical)
	}
}

// command is the Decision.Command of in's decision.
func (in *Claim) command() string {
	switch in.Type {
	case events.TypeReleaseSubmitted:
		return events.CommandRelease
	case events.TypeRenameSubmitted, events.TypeRenameFinishing:
		return events.CommandRename
	case events.TypeRenameTargetClaimed:
		return events.CommandRenameTo
	case events.TypeReservationSubmitted:
		return events.CommandReserve
	case events.TypeUnreservation:
		return events.CommandUnreserve
	case events.TypeTransferSubmitted:
		return events.CommandTransfer
	case events.TypePolicyFreezing:
		return events.CommandFreeze
	case events.TypeHolderCarried:
		return events.CommandCarry
	case events.TypePolicyActivating:
		return events.CommandActivate
	case events.TypeShadowFollowing:
		return events.CommandShadow
	}
	return events.CommandClaim
}

// toUsername is a rename's to as typed, part of its payload.
func (in *Claim) toUsername() string {
	if in.Type == events.TypeRenameSubmitted && in.Rename != nil {
		return storable(in.Rename.To)
	}
	return ""
}

func (in *Claim) base(outcome string) *events.Decision {
	return &events.Decision{
		RequestID: in.RequestID, UserID: in.UserID, Username: in.Username, Canonical: in.Name.Canonical, Caller: in.Caller,
		Outcome: outcome, ClaimPartition: in.Partition, ClaimOffset: in.Offset, PolicyVersion: in.Policy.Version(),
		Command: in.command(), ToUsername: in.toUsername(),
	}
}

// registration registers in's name to in's user, quoting the request that
// first won it and when.
func (in *Claim) registration(holderRequestID string, registeredAt time.Time) *events.Decision {
	d := in.base(events.OutcomeRegistered)
	d.HolderRequestID, d.RegisteredAt = holderRequestID, &registeredAt
	return d
}

func (in *Claim) rejection(reason, detail, conflictsWith string) *events.Decision {
	d := in.base(events.OutcomeRejected)
	d.Reason, d.Detail, d.Conflicts = reason, detail, conflictsWith
	return d
}

func encode(d *events.Decision) (Outcome, error) {
	v, err := events.DecisionValue(d)
	if err != nil {
		return Outcome{}, fmt.Errorf("%w: %w", errDecision, err)
	}
	return Outcome{Decision: d, Value: v}, nil
}
