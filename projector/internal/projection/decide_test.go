package projection

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
)

const testPartitions = 12

// record builds the claims record the API would produce for username,
// at the given offset of its key's partition.
// testRules checks claims as a new registry of testPartitions partitions does.
var testRules = Rules{Partitions: testPartitions, Policy: username.MustVersion(username.Latest)}

func record(t testing.TB, offset int64, requestID, userID, typed string) *kgo.Record {
	t.Helper()
	name, err := username.Normalize(typed)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := events.ClaimRecord(&events.ClaimSubmitted{RequestID: requestID, UserID: userID, Username: typed,
		Canonical: name.Canonical, Key: name.Key, PolicyVersion: username.Latest})
	if err != nil {
		t.Fatal(err)
	}
	rec.Partition, rec.Offset = events.Partition(rec.Key, testPartitions), offset
	rec.Timestamp = time.Date(2026, 11, 22, 0, 0, 0, int(offset), time.UTC)
	return rec
}

func decideAll(t *testing.T, st *State, recs ...*kgo.Record) []*events.Decision {
	t.Helper()
	var out []*events.Decision
	for _, r := range recs {
		in := Parse(r, testRules)
		o, err := Decide(st, &in)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, o.Decision)
	}
	return out
}

func TestDecideFirstValidClaimWins(t *testing.T) {
	t.Parallel()
	alice, bob := uuid.NewString(), uuid.NewString()
	r1, r2, r3, r4, r5 := uuid.NewString(), uuid.NewString(), uuid.NewString(), uuid.NewString(), uuid.NewString()
	ds := decideAll(t, NewState(),
		record(t, 0, r1, alice, "Alice"),
		record(t, 1, r2, bob, "ALiCE"),
		record(t, 2, r3, bob, "a1ice"), // digit one
		record(t, 3, r4, alice, "alice"),
		record(t, 4, r5, bob, "root"),
	)
	type want struct{ outcome, reason, conflicts, holder string }
	wants := []want{
		{events.OutcomeRegistered, "", "", r1},
		{events.OutcomeRejected, events.ReasonTaken, "alice", ""},
		{events.OutcomeRejected, events.ReasonConfusable, "alice", ""},
		{events.OutcomeRegistered, "", "", r1}, // the holder again, under a new request
		{events.OutcomeRejected, events.ReasonReserved, "", ""},
	}
	for i, d := range ds {
		w := wants[i]
		if d.Outcome != w.outcome || d.Reason != w.reason || d.Conflicts != w.conflicts || d.HolderRequestID != w.holder {
			t.Errorf("claim %d: got %+v, want %+v", i, d, w)
		}
		if d.ClaimOffset != int64(i) {
			t.Errorf("claim %d: decision names offset %d", i, d.ClaimOffset)
		}
	}
}

func TestDecideRepeatedRequestID(t *testing.T) {
	t.Parallel()
	id, user := uuid.NewString(), uuid.NewString()
	st := NewState()
	first := Parse(record(t, 0, id, user, "carol"), testRules)
	o1, _ := Decide(st, &first)
	again := Parse(record(t, 7, id, user, "carol"), testRules)
	o2, _ := Decide(st, &again)
	if string(o1.Value) != string(o2.Value) || !o2.Copy {
		t.Errorf("same request_id, same payload: got %s then %s (new ledger entry %v)", o1.Value, o2.Value, !o2.Copy)
	}
	other := Parse(record(t, 8, id, user, "dave"), testRules)
	o3, _ := Decide(st, &other)
	if o3.Decision.Reason != events.ReasonRequestConflict || o3.Change.Entry != nil || o3.Decision.Username != "dave" {
		t.Errorf("same request_id, other payload: %+v", o3.Decision)
	}
	if _, held := st.Holders[first.Name.Key]; !held {
		t.Error("carol not held")
	}
}

func TestDecidePoison(t *testing.T) {
	t.Parallel()
	good := record(t, 3, uuid.NewString(), uuid.NewString(), "erin")
	cases := map[string]func(r *kgo.Record){
		"not json":   func(r *kgo.Record) { r.Value = []byte("{") },
		"no headers": func(r *kgo.Record) { r.Headers = nil },
		"wrong key":  func(r *kgo.Record) { r.Key = []byte("frank") },
		"wrong part": func(r *kgo.Record) { r.Partition = (r.Partition + 1) % testPartitions },
		"bad request id": func(r *kgo.Record) {
			r.Value = []byte(strings.Replace(string(r.Value), `"request_id":"`, `"request_id":"x`, 1))
		},
		"bad user id": func(r *kgo.Record) {
			r.Value = []byte(strings.Replace(string(r.Value), `"user_id":"`, `"user_id":"x`, 1))
		},
		"old policy": func(r *kgo.Record) {
			r.Value = []byte(strings.Replace(string(r.Value), `"policy_version":2`, `"policy_version":1`, 1))
		},
		"bad username": func(r *kgo.Record) {
			r.Value = []byte(strings.Replace(string(r.Value), `"username":"erin"`, `"username":"er in"`, 1))
		},
	}
	for name, spoil := range cases {
		r := *good
		spoil(&r)
		ds := decideAll(t, NewState(), &r)
		again := decideAll(t, NewState(), &r) // replay: the same verdict, the same bytes
		a, _ := json.Marshal(ds[0])
		b, _ := json.Marshal(again[0])
		if ds[0].Reason != events.ReasonInvalid || ds[0].Detail == "" || string(a) != string(b) {
			t.Errorf("%s: got %s, replay %s", name, a, b)
		}
		if uuid.Validate(ds[0].RequestID) != nil {
			t.Errorf("%s: decision request_id %q is not a UUID", name, ds[0].RequestID)
		}
	}
}

// TestPositionIDIgnoresTopic: the request_id derived for an unreadable
// claim depends on its partition and offset only, not on the name of the
// topic it was read from, so a log replayed from a topic of another name
// (a registry given other Topics) decides it to the same bytes.
func TestPositionIDIgnoresTopic(t *testing.T) {
	t.Parallel()
	want := uuid.NewSHA1(positionNamespace, []byte("claims/4/17")).String()
	var values []string
	for _, topic := range []string{"claims", "other-claims", ""} {
		r := &kgo.Record{Topic: topic, Partition: 4, Offset: 17, Value: []byte("not json")}
		in := Parse(r, testRules)
		if in.RequestID != want {
			t.Errorf("topic %q: request_id %s, want %s", topic, in.RequestID, want)
		}
		out, err := Decide(NewState(), &in)
		if err != nil {
			t.Fatal(err)
		}
		values = append(values, string(out.Value))
	}
	if values[0] != values[1] || values[1] != values[2] {
		t.Errorf("decisions differ with the topic's name: %q", values)
	}
}
