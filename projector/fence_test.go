package projector

import (
	"context"
	"errors"
	"testing"

	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestFenceRefusesStaleEpoch: two owners of one partition, the old one
// paused while the new one bumped the epoch. The old owner's batch is
// refused and leaves no trace; the new owner's lands.
func TestFenceRefusesStaleEpoch(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	ctx := context.Background()
	p := &Projector{cfg: Config{Partitions: testPartitions, Metrics: NewMetrics(nil)}, pool: pool}
	rec := record(t, 0, uuid.NewString(), uuid.NewString(), "grace")
	part := rec.Partition

	old, err := assign(ctx, pool, []int32{part})
	if err != nil {
		t.Fatal(err)
	}
	cur, err := assign(ctx, pool, []int32{part}) // the rebalance gives the partition to a new owner
	if err != nil {
		t.Fatal(err)
	}
	if cur[0].epoch != old[0].epoch+1 {
		t.Fatalf("epoch went %d → %d", old[0].epoch, cur[0].epoch)
	}
	zombie := &partitionState{partition: part, epoch: old[0].epoch}
	if _, err := p.commit(ctx, zombie, []*kgo.Record{rec}); !errors.Is(err, ErrFenced) {
		t.Fatalf("stale owner's commit: %v, want ErrFenced", err)
	}
	if n := count(t, pool, `SELECT count(*) FROM requests`) + count(t, pool, `SELECT count(*) FROM outbox`); n != 0 {
		t.Fatalf("fenced batch left %d rows", n)
	}
	owner := &partitionState{partition: part, epoch: cur[0].epoch}
	rows, err := p.commit(ctx, owner, []*kgo.Record{rec})
	if err != nil || len(rows) != 1 || owner.nextOffset != 1 {
		t.Fatalf("current owner's commit: %v, %d outbox rows, next offset %d", err, len(rows), owner.nextOffset)
	}
}

// TestFenceWaitsForBatchInFlight: the compare-and-set locks the partition
// row, so a new owner's epoch bump waits until the old owner's batch
// commits, then starts from the offset that batch wrote.
func TestFenceWaitsForBatchInFlight(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	ctx := context.Background()
	as, err := assign(ctx, pool, []int32{0})
	if err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tag, err := tx.Exec(ctx, sqlAdvance, 0, as[0].epoch, 0, 5)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("advance: %v, %d rows", err, tag.RowsAffected())
	}
	bumped := make(chan []assignment)
	go func() {
		next, err := assign(ctx, pool, []int32{0})
		if err != nil {
			t.Error(err)
		}
		bumped <- next
	}()
	select {
	case <-bumped:
		t.Fatal("epoch bump did not wait for the batch in flight")
	case <-time.After(300 * time.Millisecond):
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	next := <-bumped
	if next[0].nextOffset != 5 || next[0].epoch != as[0].epoch+1 {
		t.Fatalf("new owner starts at %d with epoch %d, want 5 and %d", next[0].nextOffset, next[0].epoch, as[0].epoch+1)
	}
}

func count(t *testing.T, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, sql string) int {
	t.Helper()
	var n int
	if err := q.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
