package projector

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims"
	"github.com/usernameregistry/registry/events"
)

const testPartitions = 12

// record builds the claims record the API would produce for username,
// at the given offset of its key's partition.
func record(t testing.TB, offset int64, requestID, userID, username string) *kgo.Record {
	t.Helper()
	name, err := claims.Normalize(username)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := events.ClaimRecord(&events.ClaimSubmitted{RequestID: requestID, UserID: userID, Username: username,
		Canonical: name.Canonical, Key: name.Key, PolicyVersion: claims.PolicyVersion})
	if err != nil {
		t.Fatal(err)
	}
	rec.Partition, rec.Offset = events.Partition(rec.Key, testPartitions), offset
	rec.Timestamp = time.Date(2026, 11, 22, 0, 0, 0, int(offset), time.UTC)
	return rec
}
