package projector_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/kafka"
	"github.com/usernameregistry/registry/internal/testenv"
	"github.com/usernameregistry/registry/internal/tools/chaos"
	"github.com/usernameregistry/registry/projector"
)

// TestAssignmentWaitsOutOffsetNotAvailable plays what Apache Kafka answers
// right after a leader election on kfake: for a moment ListOffsets says
// OFFSET_NOT_AVAILABLE (KIP-207) until the new leader's high watermark has
// caught up. A projector checking its stored offsets against the log ends
// on assignment must ask again, not fail the assignment: failing dropped
// every partition of the member and forced a rebalance, each one bumping
// the partitions' epochs again. So the claims are decided under the first
// assignment's epoch (1), and the injected answers were all served.
func TestAssignmentWaitsOutOffsetNotAvailable(t *testing.T) {
	t.Parallel()
	const partitions = 3
	c, err := kafka.Embedded("", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	prod, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := kafka.EnsureTopics(ctx, kadm.NewClient(prod), partitions, -1); err != nil {
		t.Fatal(err)
	}
	var recs []*kgo.Record
	for _, name := range []string{"una", "vic", "wes", "xena", "yul", "zed"} {
		n, err := username.Normalize(name)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := events.ClaimRecord(&events.ClaimSubmitted{RequestID: uuid.NewString(), UserID: uuid.NewString(), Username: name,
			Canonical: n.Canonical, Key: n.Key, PolicyVersion: username.Latest})
		if err != nil {
			t.Fatal(err)
		}
		rec.Partition = events.Partition(rec.Key, partitions)
		recs = append(recs, rec)
	}
	if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	const unavailableAnswers = 4
	unavailable := testenv.OffsetNotAvailable(c, unavailableAnswers)

	pool, url := testenv.Database(t)
	log := testenv.Logger(t)
	p, err := projector.New(projector.Config{Kafka: kafka.ClientOptions(c.ListenAddrs(), log), Partitions: partitions,
		SessionTimeout: 6 * time.Second, Logger: log}, pool)
	if err != nil {
		t.Fatal(err)
	}
	pctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(pctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("projector: %v", err)
		}
	})
	for deadline := time.Now().Add(45 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		ok, why := chaos.Settled(ctx, c.ListenAddrs(), url)
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("claims not decided 45s after the projector started: %s", why)
		}
	}
	if n := unavailable.Load(); n > 0 {
		t.Fatalf("ListOffsets answered OFFSET_NOT_AVAILABLE only %d times of %d: the test did not test", unavailableAnswers-n, unavailableAnswers)
	}
	var maxEpoch, parts int
	if err := pool.QueryRow(ctx, `SELECT max(owner_epoch), count(*) FROM claim_partitions`).Scan(&maxEpoch, &parts); err != nil {
		t.Fatal(err)
	}
	if maxEpoch != 1 || parts != partitions {
		t.Errorf("%d partitions with epochs up to %d, want %d at epoch 1: the assignment failed and the group rebalanced", parts, maxEpoch, partitions)
	}
}
