package projection

import (
	"reflect"
	"testing"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
)

// TestFoldOfPublishedDecisionsIsTheProjectorsState: the state a partition's
// decisions build when the projector decides them equals the state Fold
// builds from the same decisions read back from registrations records (as
// rebuild reads them), row for row.
func TestFoldOfPublishedDecisionsIsTheProjectorsState(t *testing.T) {
	t.Parallel()
	alice, bob := uuid.NewString(), uuid.NewString()
	r1, r2 := uuid.NewString(), uuid.NewString()
	recs := []*kgo.Record{
		record(t, 0, r1, alice, "Alice"),
		record(t, 1, r2, bob, "ALiCE"),
		record(t, 2, uuid.NewString(), alice, "alice"),
		record(t, 3, r1, alice, "Alice"), // a copy: not folded
		record(t, 4, r1, bob, "Alice"),   // request_conflict: no row
		record(t, 5, uuid.NewString(), bob, "root"),
		record(t, 6, uuid.NewString(), bob, "bob"),
		{Value: []byte("poison"), Offset: 7},
	}
	live, rebuilt := NewState(), NewState()
	for _, rec := range recs {
		in := Parse(rec, testRules)
		out, err := Decide(live, &in)
		if err != nil {
			t.Fatal(err)
		}
		if out.Copy {
			continue
		}
		published, err := events.DecodeDecision(events.DecisionRecord(rec.Key, rec.Partition, out.Decision.Type(), out.Value))
		if err != nil {
			t.Fatal(err)
		}
		c, err := Fold(published, out.Value, rec.Key)
		if err != nil {
			t.Fatal(err)
		}
		rebuilt.Apply(c)
	}
	if len(live.Holders) != 2 || len(live.Requests) != 6 {
		t.Fatalf("the sequence built %d holders and %d ledger rows; want 2 and 6", len(live.Holders), len(live.Requests))
	}
	for id, e := range live.Requests {
		want, _ := e.Row()
		got, err := rebuilt.Requests[id].Row()
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("ledger row %s: rebuilt %v (%v), live %v", id, got, err, want)
		}
	}
	for k, h := range live.Holders {
		if !reflect.DeepEqual(rebuilt.Holders[k], h) {
			t.Errorf("holder of %s: rebuilt %+v, live %+v", k, rebuilt.Holders[k], h)
		}
	}
}

// TestFoldRefusesAWinWithoutItsHolder: a registration naming itself as
// holder must carry what the usernames row needs.
func TestFoldRefusesAWinWithoutItsHolder(t *testing.T) {
	t.Parallel()
	id := uuid.NewString()
	d := &events.Decision{RequestID: id, UserID: uuid.NewString(), Canonical: "x", Outcome: events.OutcomeRegistered, HolderRequestID: id}
	if _, err := Fold(d, nil, []byte("x")); err == nil {
		t.Error("a win without registered_at folded")
	}
}
