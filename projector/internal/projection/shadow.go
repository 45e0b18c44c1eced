package projection

import (
	"fmt"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
)

// A shadow follows its name. A policy upgrade carries a name the new
// version refuses a second time, under the key it is displayed as
// (CarryShadow, ShadowKey): "Iumen11" also blocks "lumen11". The
// commands that end or move the holding (a release, a rename's final
// renamed, a transfer) are decided in the partition of the name's own
// key; the shadow usually sits in another partition, whose single writer
// never hears of them. So the partition that decides such a command
// writes, in the same transaction and through the same outbox as a
// rename's next step, a ShadowFollowing for the shadow's key: the
// shadow's partition decides it in log order like any command, dropping
// the shadow or giving it to the new holder, but only while it is still
// the shadow of the holding the follow-up names (its request_id and
// user). A copy of the follow-up (a relay after a crash) is a ledger
// copy; a follow-up that finds no such shadow is rejected not_held and
// changes nothing.

// shadowNamespace derives a follow-up's request_id from the decision that
// caused it, so a redelivered one is recognised as a copy.
var shadowNamespace = uuid.MustParse("b7e3c1d4-5f6a-4e2b-9c8d-1a0f3e5d7b92")

// ShadowID is the request_id of the ShadowFollowing that the decision
// with request_id cause, of a record in partition, writes for the shadow
// under key.
func ShadowID(cause string, partition int32, key string) string {
	return uuid.NewSHA1(shadowNamespace, fmt.Appendf(nil, "shadow/%s/%d/%s", cause, partition, key)).String()
}

// checkShadow validates a ShadowFollowing and fills in's name (the
// shadow's: its key is the displayed one); it returns why the record is
// invalid, or "". The names are checked under the version the record says
// computed them, the one the upgrade carried the shadow under.
func checkShadow(in *Claim, c *events.ClaimSubmitted, r *kgo.Record, ru Rules) string {
	s := c.Shadow
	if s == nil {
		return "a shadow follow-up carries no shadow"
	}
	uid, err := uuid.Parse(c.UserID)
	if err != nil {
		return fmt.Sprintf("user_id %q is not a UUID", c.UserID)
	}
	in.UserID = uid.String()
	f := *s
	for _, id := range []*string{&f.HolderRequestID, &f.HolderUserID, &f.Cause} {
		u, err := uuid.Parse(*id)
		if err != nil {
			return fmt.Sprintf("shadow follow-up id %q is not a UUID", *id)
		}
		*id = u.String()
	}
	switch f.Action {
	case events.ShadowDrop:
	case events.ShadowTransfer:
		if f.RegisteredAt == nil {
			return "a shadow transfer lacks registered_at"
		}
	default:
		return fmt.Sprintf("unknown shadow action %q", f.Action)
	}
	in.Shadow = &f
	policy, err := username.ForVersion(c.PolicyVersion)
	if err != nil {
		return err.Error()
	}
	canon, _, _, ok := CarryName(policy, c.Username)
	shown, sok := ShadowKey(policy, c.Username)
	if !ok || !sok || c.Canonical != canon || c.Key != shown || string(r.Key) != shown {
		return "shadow follow-up's canonical form or key does not match the username policy"
	}
	if p := events.Partition(r.Key, ru.Partitions); p != r.Partition {
		return fmt.Sprintf("record is in partition %d but its key belongs in partition %d", r.Partition, p)
	}
	in.Name = username.Username{Typed: c.Username, Canonical: canon, Key: shown}
	return ""
}

// decideShadow decides a ShadowFollowing: the shadow under in's key with
// in's canonical form goes (drop) or names the new holder (transfer), if
// it is still the shadow of the holding the follow-up names.
func decideShadow(st *State, in *Claim) *events.Decision {
	f := in.Shadow
	m := st.member(in.Name.Key, in.Name.Canonical)
	var d *events.Decision
	switch {
	case m == nil || m.RequestID != f.HolderRequestID || m.UserID != f.HolderUserID:
		d = in.rejection(events.ReasonNotHeld, "", "")
	case f.Action == events.ShadowDrop:
		d = in.base(events.OutcomeShadowDropped)
	default:
		d = in.base(events.OutcomeShadowTransferred)
		at := f.RegisteredAt.UTC()
		d.PreviousUserID, d.HolderRequestID, d.RegisteredAt = m.UserID, f.Cause, &at
	}
	d.Shadow = f
	return d
}

// shadowFollowUp returns the ShadowFollowing that decision d (of in,
// decided in state st, not yet folded) must write: after a release, a
// rename's final renamed or a transfer of a name that has a shadow, one
// for the shadow's key; nil otherwise. Whether the name has a shadow
// follows from its holder's row: only a partition that activated a policy
// version holds names its policy refuses, and the upgrade carried a
// shadow for each of those whose displayed key differs (ShadowKey). A
// transfer to a spelling displayed under another key (or none) drops the
// shadow rather than move it.
func shadowFollowUp(st *State, in *Claim, d *events.Decision) (*kgo.Record, error) {
	if !st.Upgraded {
		return nil, nil
	}
	var action string
	switch {
	case d.Outcome == events.OutcomeReleased || d.Outcome == events.OutcomeRenamed:
		action = events.ShadowDrop
	case d.Outcome == events.OutcomeTransferred:
		action = events.ShadowTransfer
	default:
		return nil, nil
	}
	h := st.holderOf(in.Name.Key, in.Name.Canonical)
	if h == nil {
		return nil, nil
	}
	key, ok := ShadowKey(in.Policy, h.Username)
	if !ok {
		return nil, nil
	}
	if action == events.ShadowTransfer {
		if to, ok := ShadowKey(in.Policy, d.Username); !ok || to != key {
			action = events.ShadowDrop
		}
	}
	f := &events.ShadowFollow{Action: action, HolderRequestID: h.RequestID, HolderUserID: h.UserID,
		Cause: d.RequestID, CausePartition: in.Partition, CauseOffset: in.Offset}
	user := h.UserID
	if action == events.ShadowTransfer {
		user, f.RegisteredAt = d.UserID, d.RegisteredAt
	}
	canon, _, _, _ := CarryName(in.Policy, h.Username)
	c := &events.ClaimSubmitted{RequestID: ShadowID(d.RequestID, in.Partition, key), UserID: user, Username: h.Username,
		Canonical: canon, Key: key, PolicyVersion: in.Policy.Version(), SubmittedAt: in.Timestamp, Caller: in.Caller, Shadow: f}
	return events.CommandRecord(events.TypeShadowFollowing, c)
}
