package projection

import (
	"slices"
	"testing"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
)

// deliver decides a follow-up the outbox wrote, in the partition the
// relay produces it to.
func (l *upgradeLog) deliver(next *kgo.Record) Outcome {
	l.t.Helper()
	if next == nil || events.TypeOf(next) != events.TypeShadowFollowing {
		l.t.Fatalf("want a shadow follow-up, got %v", next)
	}
	rec := &kgo.Record{Key: next.Key, Value: next.Value, Headers: next.Headers, Partition: events.Partition(next.Key, testPartitions)}
	return l.decide(rec)
}

// shadowOf returns the member of key with canonical, or nil.
func (l *upgradeLog) shadowOf(key, canonical string) *Holder {
	return l.states[events.Partition([]byte(key), testPartitions)].member(key, canonical)
}

// TestShadowFollowsItsName: after an upgrade, a release, a rename away
// from and a transfer of a name that also has a shadow write a follow-up
// for the shadow's key; the shadow's partition drops the shadow (the key
// it blocked is free, or its group goes on without it) or gives it to the
// new holder. A copy of a follow-up and a stale one change nothing; a
// replay decides every record, the follow-ups included, to the same bytes.
func TestShadowFollowsItsName(t *testing.T) {
	t.Parallel()
	l := newUpgradeLog(t, 1)
	users := map[string]string{}
	for _, name := range []string{"Iumen11", "Ilama7", "Ionic5", "lumen22", "Iumen22", "Iex1"} {
		users[name] = uuid.NewString()
		if d := l.claim(1, users[name], name); d.Outcome != events.OutcomeRegistered {
			t.Fatalf("version 1 refused %q: %+v", name, d)
		}
	}
	l.upgrade(2)
	other := uuid.NewString()
	if d := l.claim(2, other, "lumen11"); d.Reason != events.ReasonConfusable {
		t.Fatalf("claim of lumen11 beside the shadow of Iumen11: %+v", d)
	}

	// Release: the shadow goes, lumen11 is free.
	out := l.decide(inspectCommand(t, events.TypeReleaseSubmitted, users["Iumen11"], "Iumen11"))
	if out.Decision.Outcome != events.OutcomeReleased {
		t.Fatalf("release of Iumen11: %+v", out.Decision)
	}
	follow := out.Next
	if d := l.deliver(follow).Decision; d.Outcome != events.OutcomeShadowDropped || d.UserID != users["Iumen11"] || d.Canonical != "iumen11" {
		t.Fatalf("the follow-up of the release: %+v", d)
	}
	if m := l.shadowOf("lurnenll", "iumen11"); m != nil {
		t.Fatalf("the shadow is still there: %+v", m)
	}
	if again := l.deliver(follow); !again.Copy {
		t.Errorf("the follow-up delivered again is not a copy: %+v", again.Decision)
	}
	if d := l.claim(2, other, "lumen11"); d.Outcome != events.OutcomeRegistered {
		t.Errorf("claim of lumen11 after Iumen11's release: %+v", d)
	}

	// Rename away: the final renamed writes the follow-up.
	ren := inspectCommand(t, events.TypeRenameSubmitted, users["Ilama7"], "Ilama7")
	_, c, _ := events.DecodeCommand(ren)
	to, _ := username.MustVersion(2).Normalize("newllama7")
	c.Rename = &events.RenameStep{RequestID: c.RequestID, From: "Ilama7", FromCanonical: c.Canonical, FromKey: c.Key, To: to.Typed, ToCanonical: to.Canonical, ToKey: to.Key}
	ren, _ = events.CommandRecord(events.TypeRenameSubmitted, c)
	ren.Partition = events.Partition(ren.Key, testPartitions)
	step := l.decide(ren)
	for i := 0; i < 2 && step.Next != nil && events.TypeOf(step.Next) != events.TypeShadowFollowing; i++ {
		n := step.Next
		step = l.decide(&kgo.Record{Key: n.Key, Value: n.Value, Headers: n.Headers, Partition: events.Partition(n.Key, testPartitions)})
	}
	if step.Decision.Outcome != events.OutcomeRenamed {
		t.Fatalf("rename of Ilama7: %+v", step.Decision)
	}
	if d := l.deliver(step.Next).Decision; d.Outcome != events.OutcomeShadowDropped {
		t.Fatalf("the follow-up of the rename: %+v", d)
	}
	if d := l.claim(2, other, "llama7"); d.Outcome != events.OutcomeRegistered {
		t.Errorf("claim of llama7 after the rename away from Ilama7: %+v", d)
	}

	// Transfer: the shadow names the new holder, and still blocks; the
	// new holder's release then frees the key.
	newHolder := uuid.NewString()
	tr := inspectCommand(t, events.TypeTransferSubmitted, newHolder, "Ionic5")
	testKeys.Sign(tr)
	out = l.decide(tr)
	if out.Decision.Outcome != events.OutcomeTransferred {
		t.Fatalf("transfer of Ionic5: %+v", out.Decision)
	}
	if h := l.states[tr.Partition].Holders["ionic5"]; h == nil || !h.Invalid || h.UserID != newHolder {
		t.Errorf("the transferred name's row: %+v, want the new holder's, still marked invalid", h)
	}
	if d := l.deliver(out.Next).Decision; d.Outcome != events.OutcomeShadowTransferred || d.PreviousUserID != users["Ionic5"] {
		t.Fatalf("the follow-up of the transfer: %+v", d)
	}
	if m := l.shadowOf("lonic5", "ionic5"); m == nil || m.UserID != newHolder || m.RequestID != out.Decision.RequestID || !m.Grandfathered || !m.Invalid {
		t.Errorf("the shadow after the transfer: %+v, want the new holder's", m)
	}
	if d := l.claim(2, other, "lonic5"); d.Reason != events.ReasonConfusable {
		t.Errorf("claim of lonic5 after the transfer: %+v", d)
	}
	// A stale follow-up (the old holding's drop, written again by hand)
	// finds no such shadow and changes nothing.
	_, stale, _ := events.DecodeCommand(out.Next)
	stale.RequestID, stale.UserID = uuid.NewString(), users["Ionic5"]
	stale.Shadow.Action, stale.Shadow.RegisteredAt = events.ShadowDrop, nil
	staleRec, _ := events.CommandRecord(events.TypeShadowFollowing, stale)
	if d := l.deliver(staleRec).Decision; d.Reason != events.ReasonNotHeld {
		t.Errorf("a stale follow-up: %+v", d)
	}
	if m := l.shadowOf("lonic5", "ionic5"); m == nil || m.UserID != newHolder {
		t.Errorf("a stale follow-up changed the shadow: %+v", m)
	}
	out = l.decide(inspectCommand(t, events.TypeReleaseSubmitted, newHolder, "Ionic5"))
	if out.Decision.Outcome != events.OutcomeReleased {
		t.Fatalf("the new holder's release of Ionic5: %+v", out.Decision)
	}
	if d := l.deliver(out.Next).Decision; d.Outcome != events.OutcomeShadowDropped {
		t.Fatalf("the follow-up of the new holder's release: %+v", d)
	}
	if d := l.claim(2, other, "lonic5"); d.Outcome != events.OutcomeRegistered {
		t.Errorf("claim of lonic5 after the new holder's release: %+v", d)
	}

	// A group: the shadow's member goes, the other stays and still blocks.
	out = l.decide(inspectCommand(t, events.TypeReleaseSubmitted, users["Iumen22"], "Iumen22"))
	if d := l.deliver(out.Next).Decision; d.Outcome != events.OutcomeShadowDropped {
		t.Fatalf("the follow-up of Iumen22's release: %+v", d)
	}
	if got := l.members("lumen22"); !slices.Equal(got, []string{"lumen22"}) {
		t.Errorf("lumen22's group after Iumen22's release: %q", got)
	}
	if d := l.claim(2, other, "lumen22"); d.Reason != events.ReasonTaken {
		t.Errorf("claim of lumen22, still held: %+v", d)
	}

	// The shadow's key in the name's own partition: the same rule.
	if events.Partition([]byte("iexl"), testPartitions) != events.Partition([]byte("lexl"), testPartitions) {
		t.Fatal("iex1's key and its shadow's are in different partitions at this partition count")
	}
	out = l.decide(inspectCommand(t, events.TypeReleaseSubmitted, users["Iex1"], "Iex1"))
	if d := l.deliver(out.Next).Decision; d.Outcome != events.OutcomeShadowDropped {
		t.Fatalf("the follow-up of Iex1's release: %+v", d)
	}

	// A release of a name without a shadow writes nothing.
	rel := command(t, events.TypeReleaseSubmitted, uuid.NewString(), other, "lumen11", 0)
	rel.Partition = events.Partition(rel.Key, testPartitions)
	if out = l.decide(rel); out.Decision.Outcome != events.OutcomeReleased || out.Next != nil {
		t.Errorf("release of lumen11: %+v, next %v", out.Decision, out.Next)
	}

	l.replayAgrees()
}

// TestShadowFollowUpDecidedWhileFrozen: a partition frozen for an upgrade
// still decides a follow-up (it is written once, by an outbox: answered
// policy_upgrading it would be lost).
func TestShadowFollowUpDecidedWhileFrozen(t *testing.T) {
	t.Parallel()
	l := newUpgradeLog(t, 1)
	holder := uuid.NewString()
	l.claim(1, holder, "Iumen11")
	l.upgrade(2)
	out := l.decide(inspectCommand(t, events.TypeReleaseSubmitted, holder, "Iumen11"))
	st := l.states[events.Partition([]byte("lurnenll"), testPartitions)]
	st.FrozenTo = 3 // as a freeze for a later version leaves it
	if d := l.deliver(out.Next).Decision; d.Outcome != events.OutcomeShadowDropped {
		t.Errorf("a follow-up in a frozen partition: %+v", d)
	}
}
