package rebuild

import (
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
)

// TestDecodeDecisionFollowsEvents: rebuild reads a registrations record
// exactly when events.DecodeDecision does (every schema version from 1 to
// events.SchemaVersion, spelt as events parses it; none newer), and a
// record events reads but the projection cannot use is refused too.
func TestDecodeDecisionFollowsEvents(t *testing.T) {
	t.Parallel()
	id, at := uuid.NewString(), time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	win := &events.Decision{RequestID: id, UserID: uuid.NewString(), Username: "Alice", Canonical: "alice",
		Outcome: events.OutcomeRegistered, HolderRequestID: id, RegisteredAt: &at, ClaimPartition: 2, ClaimOffset: 7, PolicyVersion: 1}
	value, err := events.DecisionValue(win)
	if err != nil {
		t.Fatal(err)
	}
	withSchema := func(v string) *kgo.Record {
		r := events.DecisionRecord([]byte("alice"), 2, win.Type(), value)
		r.Headers = []kgo.RecordHeader{{Key: events.HeaderType, Value: []byte(win.Type())}}
		if v != "" {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: events.HeaderSchema, Value: []byte(v)})
		}
		return r
	}
	cases := []string{"", "01", "0", strconv.Itoa(events.SchemaVersion + 1), "x"}
	for v := 1; v <= events.SchemaVersion; v++ {
		cases = append(cases, strconv.Itoa(v))
	}
	for _, v := range cases {
		r := withSchema(v)
		_, want := events.DecodeDecision(r)
		d, got := decodeDecision(r)
		if (got == nil) != (want == nil) {
			t.Errorf("schema-version %q: rebuild says %v, events says %v", v, got, want)
		}
		if got == nil && (d.change.Holder == nil || d.change.Holder.Key != "alice" || d.change.Entry == nil) {
			t.Errorf("schema-version %q: change %+v, want a ledger row and alice's holder", v, d.change)
		}
	}
	r := withSchema("1")
	r.Partition = 3
	if _, err := decodeDecision(r); err == nil {
		t.Error("a decision in another partition than its claim's: read")
	}
}
