package projection

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
)

// upgradeLog is a claims topic of testPartitions partitions decided in
// memory, one State per partition, as the projector decides it: each
// record is parsed under its partition's version and decided with
// Decide. It also keeps every record, to replay it with Redeciders.
type upgradeLog struct {
	t      *testing.T
	states map[int32]*State
	recs   map[int32][]*kgo.Record
	values map[int32][][]byte // the decisions' bytes, in order, for the replay comparison
	nexts  map[int32][]*kgo.Record
}

func newUpgradeLog(t *testing.T, initial int) *upgradeLog {
	l := &upgradeLog{t: t, states: map[int32]*State{}, recs: map[int32][]*kgo.Record{}, values: map[int32][][]byte{}, nexts: map[int32][]*kgo.Record{}}
	for p := range int32(testPartitions) {
		st := NewState()
		st.Version = initial
		l.states[p] = st
	}
	return l
}

// decide appends rec to its partition and decides it.
func (l *upgradeLog) decide(rec *kgo.Record) Outcome {
	l.t.Helper()
	st := l.states[rec.Partition]
	rec.Offset = int64(len(l.recs[rec.Partition]))
	rec.Timestamp = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC).Add(time.Duration(rec.Offset) * time.Second)
	in := Parse(rec, Rules{Partitions: testPartitions, Policy: username.MustVersion(st.Version), Upgraded: st.Upgraded})
	if in.Admin() && in.Invalid == "" {
		in.Invalid = AdminProblem(testKeys, rec)
	}
	out, err := Decide(st, &in)
	if err != nil {
		l.t.Fatalf("deciding %s at %d/%d: %v", events.TypeOf(rec), rec.Partition, rec.Offset, err)
	}
	l.recs[rec.Partition] = append(l.recs[rec.Partition], rec)
	l.values[rec.Partition] = append(l.values[rec.Partition], out.Value)
	l.nexts[rec.Partition] = append(l.nexts[rec.Partition], out.Next)
	return out
}

func (l *upgradeLog) claim(version int, userID, typed string) *events.Decision {
	l.t.Helper()
	name, err := username.MustVersion(version).Normalize(typed)
	if err != nil {
		l.t.Fatalf("%q under version %d: %v", typed, version, err)
	}
	rec, err := events.ClaimRecord(&events.ClaimSubmitted{RequestID: uuid.NewString(), UserID: userID, Username: typed,
		Canonical: name.Canonical, Key: name.Key, PolicyVersion: version})
	if err != nil {
		l.t.Fatal(err)
	}
	rec.Partition = events.Partition(rec.Key, testPartitions)
	return l.decide(rec).Decision
}

// upgrade runs the whole upgrade to version to, as the tool does: freeze
// every partition, carry every holder, activate every partition.
func (l *upgradeLog) upgrade(to int) {
	l.t.Helper()
	from := l.states[0].Version
	for p := range int32(testPartitions) {
		rec, err := FreezeRecord(to, p, testPartitions, from)
		if err != nil {
			l.t.Fatal(err)
		}
		testKeys.Sign(rec)
		if d := l.decide(rec).Decision; d.Outcome != events.OutcomeFrozen {
			l.t.Fatalf("freeze of %d: %+v", p, d)
		}
	}
	carried := map[int32]int{}
	policy := username.MustVersion(to)
	for p := range int32(testPartitions) {
		for _, h := range l.states[p].Holders {
			e := CarriedEntry{Kind: events.CarryHolder, Username: h.Username, OldCanonical: h.Canonical, OldKey: h.Key, UserID: h.UserID,
				RequestID: h.RequestID, Partition: h.Partition, Offset: h.Offset, At: h.RegisteredAt, GrantedUnder: from}
			rec, err := e.Record(policy, testPartitions)
			if err != nil {
				l.t.Fatal(err)
			}
			testKeys.Sign(rec)
			if d := l.decide(rec).Decision; d.Outcome != events.OutcomeCarried {
				l.t.Fatalf("carry of %s: %+v", h.Username, d)
			}
			carried[rec.Partition]++
			if _, ok := ShadowKey(policy, h.Username); ok {
				e.Kind = events.CarryShadow
				rec, err := e.Record(policy, testPartitions)
				if err != nil {
					l.t.Fatal(err)
				}
				testKeys.Sign(rec)
				if d := l.decide(rec).Decision; d.Outcome != events.OutcomeCarried {
					l.t.Fatalf("shadow carry of %s: %+v", h.Username, d)
				}
				carried[rec.Partition]++
			}
		}
	}
	for p := range int32(testPartitions) {
		rec, err := ActivateRecord(to, p, testPartitions, carried[p], from)
		if err != nil {
			l.t.Fatal(err)
		}
		testKeys.Sign(rec)
		if d := l.decide(rec).Decision; d.Outcome != events.OutcomeActivated || d.PolicyVersion != to {
			l.t.Fatalf("activation of %d: %+v", p, d)
		}
	}
}

// replayAgrees decides every record of the log again with Redeciders
// starting under version 1 (registry replay), one per partition, and
// checks that each decision has the recorded bytes and the same follow-up
// (or none).
func (l *upgradeLog) replayAgrees() {
	l.t.Helper()
	for p, recs := range l.recs {
		rd := NewPolicyRedecider(testPartitions, username.MustVersion(1), false, testKeys)
		for i, rec := range recs {
			got, err := rd.Redecide(rec)
			if err != nil {
				l.t.Fatal(err)
			}
			if !got.Copy && !bytes.Equal(got.Value, l.values[p][i]) {
				l.t.Fatalf("replay of %d/%d:\n got %s\nwant %s", p, i, got.Value, l.values[p][i])
			}
			if !got.Copy && (got.Next == nil) != (l.nexts[p][i] == nil) {
				l.t.Errorf("replay of %d/%d: follow-up %v, the live decision's %v", p, i, got.Next, l.nexts[p][i])
			}
		}
	}
}

func (l *upgradeLog) members(typed string) []string {
	u, _ := username.MustVersion(2).Normalize(typed)
	var names []string
	for _, m := range l.states[events.Partition([]byte(u.Key), testPartitions)].Members[u.Key] {
		names = append(names, m.Username)
	}
	return names
}

// TestUpgradeKeepsCollidingHolders fills a version-1 registry with names
// that version 2 calls one key, upgrades it, and checks that every holder
// keeps their name, that the groups are exactly those, that a third
// user's claim of either spelling is refused, and that new claims are
// decided under version 2.
func TestUpgradeKeepsCollidingHolders(t *testing.T) {
	t.Parallel()
	l := newUpgradeLog(t, 1)
	users := map[string]string{}
	// Pairs version 1 lets two users hold (different version-1 keys) and
	// version 2 puts under one key (as typed or, for a name version 2
	// refuses, as Inspect computes it).
	for _, name := range []string{"dog", "d0g", "κοσμος", "ΚΟΣΜΟΣ", "doge", "d0gе", "lumen11", "Iumen11", "alice"} {
		users[name] = uuid.NewString()
		if d := l.claim(1, users[name], name); d.Outcome != events.OutcomeRegistered {
			t.Fatalf("version 1 refused %q: %+v", name, d)
		}
	}
	l.upgrade(2)

	for _, g := range [][]string{{"d0g", "dog"}, {"ΚΟΣΜΟΣ", "κοσμος"}, {"d0gе", "doge"}, {"Iumen11", "lumen11"}} {
		got := l.members(g[1])
		slices.Sort(got)
		want := slices.Sorted(slices.Values(g))
		if !slices.Equal(got, want) {
			t.Errorf("group of %q = %q, want %q", g[1], got, want)
		}
	}
	// lumen11 and Iumen11: version 2 refuses Iumen11, whose canonical form
	// iumen11 has a key of its own, but which displays like lumen11: it is
	// carried under both keys, a member of lumen11's group as a shadow.
	third := uuid.NewString()
	for _, c := range []struct{ typed, reason string }{
		{"dog", events.ReasonTaken}, {"d0g", events.ReasonTaken}, {"D0G", events.ReasonTaken}, {"κοσμος", events.ReasonTaken},
		{"κοσμοσ", events.ReasonTaken}, {"doge", events.ReasonTaken}, {"lumen11", events.ReasonTaken}, {"iumen11", events.ReasonTaken},
		{"alice", events.ReasonTaken}, {"d0q", ""},
	} {
		d := l.claim(2, third, c.typed)
		if d.PolicyVersion != 2 {
			t.Errorf("claim of %q decided under version %d", c.typed, d.PolicyVersion)
		}
		if c.reason == "" {
			if d.Outcome != events.OutcomeRegistered {
				t.Errorf("claim of the free %q: %+v", c.typed, d)
			}
			continue
		}
		if d.Outcome != events.OutcomeRejected || d.Reason != c.reason {
			t.Errorf("third user's claim of %q = %s %s, want rejected %s", c.typed, d.Outcome, d.Reason, c.reason)
		}
	}
	// Each holder still holds: re-claiming their own name is registered
	// with their original request.
	for _, name := range []string{"dog", "d0g", "κοσμος", "doge", "lumen11", "alice"} {
		if d := l.claim(2, users[name], name); d.Outcome != events.OutcomeRegistered {
			t.Errorf("%q's holder re-claiming it: %+v", name, d)
		}
	}
	// A command made under version 1 after the activation is answered
	// policy_upgrading and not stored, so its retry is decided afresh.
	st := l.states[events.Partition([]byte("bob"), testPartitions)]
	before := len(st.Requests)
	if d := l.claim(1, third, "bob"); d.Reason != events.ReasonPolicyUpgrading {
		t.Errorf("version-1 claim after the upgrade: %+v", d)
	}
	if len(st.Requests) != before {
		t.Error("a policy_upgrading answer was stored in the ledger")
	}

	// A member releases: the group goes on with the other, which still
	// blocks the key.
	rel := command(t, events.TypeReleaseSubmitted, uuid.NewString(), users["d0g"], "d0g", 0)
	rel.Partition = events.Partition(rel.Key, testPartitions)
	if d := l.decide(rel).Decision; d.Outcome != events.OutcomeReleased {
		t.Fatalf("release of d0g: %+v", d)
	}
	if got := l.members("dog"); !slices.Equal(got, []string{"dog"}) {
		t.Errorf("after d0g's release the group is %q", got)
	}
	if d := l.claim(2, third, "d0g"); d.Reason != events.ReasonConfusable || d.Conflicts != "dog" {
		t.Errorf("claim of d0g after its release: %+v", d)
	}

	// A name version 2 refuses stays its holder's, who may release it: the
	// upgraded partition reads it as Inspect does.
	if d := l.decide(inspectCommand(t, events.TypeReleaseSubmitted, users["ΚΟΣΜΟΣ"], "ΚΟΣΜΟΣ")).Decision; d.Outcome != events.OutcomeReleased {
		t.Errorf("the holder's release of ΚΟΣΜΟΣ after the upgrade: %+v", d)
	}
	if got := l.members("κοσμος"); !slices.Equal(got, []string{"κοσμος"}) {
		t.Errorf("after ΚΟΣΜΟΣ's release the group is %q", got)
	}

	// Replay: Redeciders starting under version 1 decide every record
	// again to the same bytes.
	l.replayAgrees()
}

// TestFrozenPartitionAnswersRetry: after its freeze a partition decides
// no new command, stores none of its answers, and still decides a
// rename's steps 2 and 3 so every rename ends.
func TestFrozenPartitionAnswersRetry(t *testing.T) {
	t.Parallel()
	st := NewState()
	st.Version = 2
	rules := Rules{Partitions: testPartitions, Policy: username.MustVersion(2)}
	freeze, err := FreezeRecord(3, 0, testPartitions, 2)
	if err != nil {
		t.Fatal(err)
	}
	// Version 3 does not exist: the marker is invalid, and changes nothing.
	in := Parse(freeze, rules)
	if out, err := Decide(st, &in); err != nil || out.Decision.Reason != events.ReasonInvalid || st.FrozenTo != 0 {
		t.Fatalf("freeze to an unknown version: %+v %v", out.Decision, err)
	}
	st.FrozenTo = 2 // as a freeze for a version 2 (from 1) leaves it
	st.Version = 1
	rules.Policy = username.MustVersion(1)
	stored := len(st.Requests) // the invalid freeze
	u := uuid.NewString()
	for _, typ := range []string{events.TypeClaimSubmitted, events.TypeReleaseSubmitted, events.TypeReservationSubmitted, events.TypeTransferSubmitted} {
		c := &events.ClaimSubmitted{RequestID: uuid.NewString(), UserID: u, Username: "alice", Canonical: "alice", Key: "alice", PolicyVersion: 1}
		rec, _ := events.CommandRecord(typ, c)
		rec.Partition = events.Partition(rec.Key, testPartitions)
		in := Parse(rec, rules)
		out, err := Decide(st, &in)
		if err != nil || out.Decision.Reason != events.ReasonPolicyUpgrading || out.Change.Entry != nil || len(st.Requests) != stored {
			t.Errorf("%s while frozen: %+v (change %+v, %v)", typ, out.Decision, out.Change, err)
		}
	}
	// A carried entry's count must match at activation.
	act, _ := ActivateRecord(2, 0, testPartitions, 1, 1)
	in = Parse(act, rules)
	if _, err := Decide(st, &in); !errors.Is(err, ErrCarryMismatch) {
		t.Errorf("activation expecting 1 carried entry with none staged: %v", err)
	}
}

// inspectCommand is a version-2 command for a name version 2 refuses,
// written under the forms Inspect reads, as the API writes it for a
// carried name.
func inspectCommand(t *testing.T, typ, userID, typed string) *kgo.Record {
	t.Helper()
	u, ok := username.MustVersion(2).Inspect(typed)
	if !ok {
		t.Fatalf("Inspect cannot read %q", typed)
	}
	rec, err := events.CommandRecord(typ, &events.ClaimSubmitted{RequestID: uuid.NewString(), UserID: userID, Username: typed,
		Canonical: u.Canonical, Key: u.Key, PolicyVersion: 2})
	if err != nil {
		t.Fatal(err)
	}
	rec.Partition = events.Partition(rec.Key, testPartitions)
	return rec
}

// TestInvalidNameCommandsBeforeAnyUpgrade: in a partition that never
// activated a version, a release of a name the policy refuses is invalid,
// as it always was (old logs replay to the same bytes).
func TestInvalidNameCommandsBeforeAnyUpgrade(t *testing.T) {
	t.Parallel()
	in := Parse(inspectCommand(t, events.TypeReleaseSubmitted, uuid.NewString(), "ΚΟΣΜΟΣ"), testRules)
	out, err := Decide(NewState(), &in)
	if err != nil || out.Decision.Reason != events.ReasonInvalid {
		t.Errorf("release of ΚΟΣΜΟΣ in a partition never upgraded: %+v %v", out.Decision, err)
	}
}
