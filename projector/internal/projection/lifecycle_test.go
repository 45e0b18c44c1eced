package projection

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
)

// logSim is a claims topic in memory with the projector's rule deciding
// each record as it is appended, and a rename's next steps appended to
// their partitions as the outbox would produce them.
type logSim struct {
	t        *testing.T
	now      time.Time
	recs     []*kgo.Record               // in append order
	offsets  map[int32]int64             // next offset per partition
	states   map[int32]*State            // live state per partition
	outcomes map[*kgo.Record]Outcome     // what each record was decided
	queue    []*kgo.Record               // next steps not yet appended
	last     map[string]*events.Decision // by request_id: the latest decision published for it
}

func newLogSim(t *testing.T) *logSim {
	return &logSim{t: t, now: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC), offsets: map[int32]int64{},
		states: map[int32]*State{}, outcomes: map[*kgo.Record]Outcome{}, last: map[string]*events.Decision{}}
}

func (l *logSim) state(p int32) *State {
	if l.states[p] == nil {
		l.states[p] = NewState()
	}
	return l.states[p]
}

// append decides rec at the end of its partition, then the next steps it
// caused, and returns rec's decision.
func (l *logSim) append(rec *kgo.Record) *events.Decision {
	l.t.Helper()
	l.queue = append(l.queue, rec)
	for len(l.queue) > 0 {
		r := l.queue[0]
		l.queue = l.queue[1:]
		r.Partition = events.Partition(r.Key, testPartitions)
		r.Offset, r.Timestamp = l.offsets[r.Partition], l.now
		l.offsets[r.Partition]++
		l.now = l.now.Add(time.Second)
		in := Parse(r, testRules)
		if in.Admin() && in.Invalid == "" {
			in.Invalid = AdminProblem(testKeys, r) // as the projector does
		}
		out, err := Decide(l.state(r.Partition), &in)
		if err != nil {
			l.t.Fatal(err)
		}
		l.recs, l.outcomes[r] = append(l.recs, r), out
		l.last[out.Decision.RequestID] = out.Decision
		if out.Next != nil {
			l.queue = append(l.queue, out.Next)
		}
	}
	id := ""
	if _, c, err := events.DecodeCommand(rec); err == nil {
		id = c.RequestID
	}
	return l.last[id]
}

func command(t *testing.T, typ, requestID, userID, typed string, hold time.Duration) *kgo.Record {
	t.Helper()
	c := &events.ClaimSubmitted{RequestID: requestID, UserID: userID, Username: typed, PolicyVersion: username.Latest,
		HoldSeconds: int64(hold / time.Second)}
	if name, err := username.Normalize(typed); err == nil {
		c.Canonical, c.Key = name.Canonical, name.Key
	}
	rec, err := events.CommandRecord(typ, c)
	if err != nil {
		t.Fatal(err)
	}
	switch typ {
	case events.TypeReservationSubmitted, events.TypeUnreservation, events.TypeTransferSubmitted:
		testKeys.Sign(rec)
	}
	return rec
}

// testKeys signs and verifies the tests' administrative commands.
var testKeys, _ = events.ParseAdminKeys(strings.NewReader("test " + strings.Repeat("a5", 32)))

func renameRecord(t *testing.T, requestID, userID, from, to string, hold time.Duration) *kgo.Record {
	t.Helper()
	f, _ := username.Normalize(from)
	tn, _ := username.Normalize(to)
	c := &events.ClaimSubmitted{RequestID: requestID, UserID: userID, Username: from, Canonical: f.Canonical, Key: f.Key,
		PolicyVersion: username.Latest, HoldSeconds: int64(hold / time.Second),
		Rename: &events.RenameStep{RequestID: requestID, From: from, FromCanonical: f.Canonical, FromKey: f.Key, To: to, ToCanonical: tn.Canonical, ToKey: tn.Key}}
	rec, err := events.CommandRecord(events.TypeRenameSubmitted, c)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func expect(t *testing.T, what string, d *events.Decision, outcome, reason string) {
	t.Helper()
	if d == nil || d.Outcome != outcome || d.Reason != reason {
		t.Errorf("%s: got %+v, want %s %s", what, d, outcome, reason)
	}
}

// TestLifecycle decides releases, holds, renames (one that succeeds, ones
// refused at either step), reservations and transfers with the one rule,
// then checks that (1) the outcomes are the contract's, (2) deciding the
// same log again with a Redecider per partition (the replay audit) gives
// the same bytes, and (3) folding the published decisions (as rebuild
// does) gives the live state, holds, reservations and locks included.
func TestLifecycle(t *testing.T) {
	t.Parallel()
	l := newLogSim(t)
	ann, ben := uuid.NewString(), uuid.NewString()
	const hold = 60 * time.Second
	id := uuid.NewString

	expect(t, "ann claims lina", l.append(record(t, 0, id(), ann, "lina")), "registered", "")
	expect(t, "ben releases lina", l.append(command(t, events.TypeReleaseSubmitted, id(), ben, "lina", hold)), "rejected", "not_holder")
	rel := l.append(command(t, events.TypeReleaseSubmitted, id(), ann, "Lina", hold))
	expect(t, "ann releases lina", rel, "released", "")
	if rel.HeldUntil == nil {
		t.Fatal("release without held_until")
	}
	held := l.append(record(t, 0, id(), ben, "lina"))
	expect(t, "ben claims held lina", held, "rejected", "held")
	if held.HeldUntil == nil || !held.HeldUntil.Equal(*rel.HeldUntil) {
		t.Errorf("held rejection's held_until %v, release's %v", held.HeldUntil, rel.HeldUntil)
	}
	expect(t, "ann reclaims lina", l.append(record(t, 0, id(), ann, "lina")), "registered", "")

	ren := id()
	expect(t, "ann renames lina to mira", l.append(renameRecord(t, ren, ann, "lina", "mira", hold)), "renamed", "")
	expect(t, "ben claims lina in its hold", l.append(record(t, 0, id(), ben, "lina")), "rejected", "held")
	expect(t, "ben claims oskar", l.append(record(t, 0, id(), ben, "oskar")), "registered", "")
	expect(t, "ann renames mira to taken oskar", l.append(renameRecord(t, id(), ann, "mira", "oskar", hold)), "rejected", "taken")
	expect(t, "ann renames lina (no longer hers)", l.append(renameRecord(t, id(), ann, "lina", "zed", hold)), "rejected", "not_holder")
	expect(t, "reserve quill", l.append(command(t, events.TypeReservationSubmitted, id(), "", "quill", 0)), "reserved", "")
	expect(t, "ann renames mira to reserved quill", l.append(renameRecord(t, id(), ann, "mira", "quill", hold)), "rejected", "reserved")
	expect(t, "reserve held oskar", l.append(command(t, events.TypeReservationSubmitted, id(), "", "oskar", 0)), "rejected", "taken")
	expect(t, "unreserve quill", l.append(command(t, events.TypeUnreservation, id(), "", "quill", 0)), "unreserved", "")
	expect(t, "transfer oskar to ann", l.append(command(t, events.TypeTransferSubmitted, id(), ann, "oskar", 0)), "transferred", "")
	expect(t, "transfer nobody", l.append(command(t, events.TypeTransferSubmitted, id(), ann, "nobody", 0)), "rejected", "not_held")
	forged := command(t, events.TypeTransferSubmitted, id(), ben, "oskar", 0)
	forged.Headers = forged.Headers[:len(forged.Headers)-1] // the proof header, appended last by Sign
	expect(t, "an unsigned transfer", l.append(forged), "rejected", "invalid")
	expect(t, "rename retried", l.append(renameRecord(t, ren, ann, "lina", "mira", hold)), "renamed", "")
	l.now = l.now.Add(hold)
	expect(t, "ben claims lina after its hold", l.append(record(t, 0, id(), ben, "lina")), "registered", "")

	// The end state: ann holds mira and oskar, ben lina; no locks.
	holders := map[string]string{}
	for _, st := range l.states {
		for _, h := range st.Holders {
			holders[h.Canonical] = h.UserID
		}
		if len(st.Locks) != 0 {
			t.Errorf("locks left: %+v", st.Locks)
		}
	}
	if want := map[string]string{"mira": ann, "oskar": ann, "lina": ben}; !reflect.DeepEqual(holders, want) {
		t.Errorf("holders %v, want %v", holders, want)
	}

	// Replay: a Redecider per partition decides the log alike.
	rds := map[int32]*Redecider{}
	for _, r := range l.recs {
		if rds[r.Partition] == nil {
			rds[r.Partition] = NewRedecider(testPartitions, testKeys)
		}
		got, err := rds[r.Partition].Redecide(r)
		if err != nil {
			t.Fatal(err)
		}
		want := l.outcomes[r]
		if got.Copy != want.Copy || (!got.Copy && !bytes.Equal(got.Value, want.Value)) {
			t.Errorf("replay of %d/%d: copy %v %s, live copy %v %s", r.Partition, r.Offset, got.Copy, got.Value, want.Copy, want.Value)
		}
	}

	// Rebuild: folding the published decisions gives the live state.
	folded := map[int32]*State{}
	for _, r := range l.recs {
		out := l.outcomes[r]
		if out.Copy {
			continue
		}
		d, err := events.DecodeDecision(events.DecisionRecord(r.Key, r.Partition, out.Decision.Type(), out.Value))
		if err != nil {
			t.Fatal(err)
		}
		c, err := Fold(d, out.Value, r.Key)
		if err != nil {
			t.Fatal(err)
		}
		if folded[r.Partition] == nil {
			folded[r.Partition] = NewState()
		}
		folded[r.Partition].Apply(c)
	}
	for p, st := range l.states {
		f := folded[p]
		if !reflect.DeepEqual(f.Holders, st.Holders) || !reflect.DeepEqual(f.Holds, st.Holds) ||
			!reflect.DeepEqual(f.Reserved, st.Reserved) || !reflect.DeepEqual(f.Locks, st.Locks) {
			t.Errorf("partition %d: folded %+v, live %+v", p, f, st)
		}
		for rid, e := range st.Requests {
			if !bytes.Equal(f.Requests[rid].Value, e.Value) {
				t.Errorf("partition %d ledger %s: folded %s, live %s", p, rid, f.Requests[rid].Value, e.Value)
			}
		}
	}
}
