package projection

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
)

// TestRedeciderAgreesWithDecide decides one sequence of records twice: with
// the projector's full in-memory state, and with a Redecider's compact
// one. Every decision must be the same bytes, and the Redecider must call
// a copy a copy.
func TestRedeciderAgreesWithDecide(t *testing.T) {
	t.Parallel()
	alice, bob := uuid.NewString(), uuid.NewString()
	r1, r2, r3, r4, r5, r6 := uuid.NewString(), uuid.NewString(), uuid.NewString(), uuid.NewString(), uuid.NewString(), uuid.NewString()
	poison := &kgo.Record{Value: []byte("not json"), Partition: 3, Offset: 9}
	spaced, err := events.ClaimRecord(&events.ClaimSubmitted{RequestID: r6, UserID: bob, Username: "bob smith", Key: "bob smith", PolicyVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	recs := []*kgo.Record{
		record(t, 0, r1, alice, "Alice"),
		record(t, 1, r2, bob, "ALiCE"),   // taken
		record(t, 2, r3, bob, "a1ice"),   // confusable (digit one)
		record(t, 3, r4, alice, "alice"), // the holder again: registered, quoting r1
		record(t, 4, r1, alice, "Alice"), // retry: a copy
		record(t, 5, r1, bob, "Alice"),   // same request_id, other user: request_conflict
		record(t, 6, r5, bob, "root"),    // reserved
		spaced,                           // invalid
		spaced,                           // retry of an invalid claim: a copy
		record(t, 10, r2, bob, "ALiCE"),  // retry of a rejection: a copy
		record(t, 11, uuid.NewString(), bob, "bob"),
		poison,
	}
	st, rd := NewState(), NewRedecider(testPartitions)
	for i, rec := range recs {
		in := Parse(rec, testRules)
		want, err := Decide(st, &in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := rd.Redecide(rec)
		if err != nil {
			t.Fatal(err)
		}
		wantCopy := want.Copy
		if got.Copy != wantCopy {
			t.Fatalf("record %d: Copy = %v, want %v (%s)", i, got.Copy, wantCopy, want.Value)
		}
		if got.Copy {
			continue
		}
		if !bytes.Equal(got.Value, want.Value) {
			t.Errorf("record %d:\n got %s\nwant %s", i, got.Value, want.Value)
		}
		if !reflect.DeepEqual(got.Change, want.Change) {
			t.Errorf("record %d: change %+v, want %+v", i, got.Change, want.Change)
		}
	}
	if reqs, holders := rd.Len(); reqs != 8 || holders != 2 {
		t.Errorf("Len() = %d requests, %d holders; want 8, 2", reqs, holders)
	}
}
