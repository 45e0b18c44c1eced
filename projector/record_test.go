package projector

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/projector/internal/projection"
)

const testPartitions = 12

// record builds the claims record the API would produce for username,
// at the given offset of its key's partition.
// latestPolicy is the policy a new registry decides under.
var latestPolicy = username.MustVersion(username.Latest)

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

func newState() *projection.State { return projection.NewState() }

// decideAll decides recs in order with the projector's rule and returns
// the decisions.
func decideAll(t *testing.T, st *projection.State, recs ...*kgo.Record) []*events.Decision {
	t.Helper()
	var out []*events.Decision
	for _, r := range recs {
		in := projection.Parse(r, projection.Rules{Partitions: testPartitions, Policy: latestPolicy})
		o, err := projection.Decide(st, &in)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, o.Decision)
	}
	return out
}
