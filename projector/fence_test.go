package projector

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/internal/testenv"
	"github.com/usernameregistry/registry/projector/internal/projection"
)

func TestMain(m *testing.M) {
	crashHelper() // a test's child process runs a projector here instead
	testenv.Main(m)
}

// TestFenceRefusesStaleEpoch: two owners of one partition, the old one
// paused while the new one bumped the epoch. The old owner's batch is
// refused and leaves no trace; the new owner's lands.
func TestFenceRefusesStaleEpoch(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	ctx := context.Background()
	p := &Projector{cfg: Config{Partitions: testPartitions, Metrics: NewMetrics(nil)}, pool: pool, log: slog.Default()}
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
	if rows, err := p.commit(ctx, []*batch{p.batchOf(zombie, rec)}); err != nil || len(rows) != 0 || !zombie.fenced {
		t.Fatalf("stale owner's commit: %v, %d outbox rows, fenced %v; want no rows and fenced", err, len(rows), zombie.fenced)
	}
	if n := count(t, pool, `SELECT count(*) FROM requests`) + count(t, pool, `SELECT count(*) FROM outbox`); n != 0 {
		t.Fatalf("fenced batch left %d rows", n)
	}
	owner := &partitionState{partition: part, epoch: cur[0].epoch}
	rows, err := p.commit(ctx, []*batch{p.batchOf(owner, rec)})
	if err != nil || len(rows) != 1 || owner.nextOffset != 1 || owner.fenced {
		t.Fatalf("current owner's commit: %v, %d outbox rows, next offset %d, fenced %v", err, len(rows), owner.nextOffset, owner.fenced)
	}
}

// TestRoundFencesOnlyStalePartitions: one round over two partitions, one of
// them taken over by a newer owner. The other partition's batch commits;
// the stale one leaves no trace.
func TestRoundFencesOnlyStalePartitions(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	ctx := context.Background()
	p := &Projector{cfg: Config{Partitions: testPartitions, Metrics: NewMetrics(nil)}, pool: pool, log: slog.Default()}
	a := record(t, 0, uuid.NewString(), uuid.NewString(), "grace")
	var b *kgo.Record
	for i := 0; b == nil || b.Partition == a.Partition; i++ {
		b = record(t, 0, uuid.NewString(), uuid.NewString(), fmt.Sprintf("ada%d", i))
	}
	as, err := assign(ctx, pool, []int32{a.Partition, b.Partition})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := assign(ctx, pool, []int32{b.Partition}); err != nil { // b's partition moves on
		t.Fatal(err)
	}
	epochs := map[int32]int64{}
	for _, x := range as {
		epochs[x.partition] = x.epoch
	}
	sa := &partitionState{partition: a.Partition, epoch: epochs[a.Partition]}
	sb := &partitionState{partition: b.Partition, epoch: epochs[b.Partition]}
	rows, err := p.commit(ctx, []*batch{p.batchOf(sa, a), p.batchOf(sb, b)})
	if err != nil || len(rows) != 1 || rows[0].partition != a.Partition {
		t.Fatalf("round: %v, outbox rows %+v; want one, of partition %d", err, rows, a.Partition)
	}
	if sa.fenced || !sb.fenced || sa.nextOffset != 1 || sb.nextOffset != 0 {
		t.Fatalf("after the round: a fenced %v next %d, b fenced %v next %d", sa.fenced, sa.nextOffset, sb.fenced, sb.nextOffset)
	}
	if n := count(t, pool, `SELECT count(*) FROM requests WHERE claim_partition = `+fmt.Sprint(b.Partition)); n != 0 {
		t.Fatalf("fenced partition has %d ledger rows", n)
	}
}

// batchOf makes a one-record batch for st, parsed as a round would.
func (p *Projector) batchOf(st *partitionState, rec *kgo.Record) *batch {
	return &batch{st: st, recs: []*kgo.Record{rec}, ins: []projection.Claim{projection.Parse(rec, projection.Rules{Partitions: int(p.cfg.Partitions), Policy: latestPolicy})}}
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
	tag, err := tx.Exec(ctx, sqlAdvance, []int32{0}, []int64{as[0].epoch}, []int64{0}, []int64{5})
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

// TestFenceTwoSessionsStaleEpochLoses: two PostgreSQL sessions run the
// compare-and-set on one partition at once: the new owner with the
// current epoch, and a zombie with the epoch it had before the rebalance,
// from the same stored offset. The owner's UPDATE holds the row lock; the
// zombie's matches no committed row (its epoch is stale) and so is
// refused at once, without waiting for the lock, before and after the
// owner commits. (TestFenceWaitsForBatchInFlight is the other order: the
// old owner's batch holds the lock and the new owner's epoch bump waits.)
func TestFenceTwoSessionsStaleEpochLoses(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	ctx := context.Background()
	old, err := assign(ctx, pool, []int32{4})
	if err != nil {
		t.Fatal(err)
	}
	cur, err := assign(ctx, pool, []int32{4}) // the rebalance: a new owner
	if err != nil {
		t.Fatal(err)
	}
	owner, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Rollback(ctx) //nolint:errcheck // committed below
	zombie, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer zombie.Rollback(ctx) //nolint:errcheck // never committed
	tag, err := owner.Exec(ctx, sqlAdvance, []int32{4}, []int64{cur[0].epoch}, []int64{0}, []int64{10})
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("owner's compare-and-set: %v, %d rows", err, tag.RowsAffected())
	}
	cas := func(from, to int64) int64 {
		done := make(chan int64, 1)
		go func() {
			tag, err := zombie.Exec(ctx, sqlAdvance, []int32{4}, []int64{old[0].epoch}, []int64{from}, []int64{to})
			if err != nil {
				t.Error(err)
			}
			done <- tag.RowsAffected()
		}()
		select {
		case n := <-done:
			return n
		case <-time.After(10 * time.Second):
			t.Fatal("the zombie's compare-and-set blocked")
			return -1
		}
	}
	if n := cas(0, 7); n != 0 {
		t.Fatalf("the zombie's compare-and-set matched %d rows while the owner's batch was in flight", n)
	}
	if err := owner.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if n := cas(10, 12); n != 0 {
		t.Fatalf("the zombie's compare-and-set at the owner's new offset matched %d rows", n)
	}
	if err := zombie.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	next, epoch, err := position(ctx, pool, 4)
	if err != nil || next != 10 || epoch != cur[0].epoch {
		t.Fatalf("stored position %d epoch %d (%v), want the owner's 10 and %d", next, epoch, err, cur[0].epoch)
	}
}

// TestSplitRound: a large round over several partitions becomes two
// balanced groups with each partition's batch whole; a small one, or one
// partition's, stays one transaction.
func TestSplitRound(t *testing.T) {
	mk := func(part int32, n int) *batch {
		return &batch{st: &partitionState{partition: part}, ins: make([]projection.Claim, n)}
	}
	small := []*batch{mk(0, 100), mk(1, 100)}
	if g := splitRound(small); len(g) != 1 {
		t.Errorf("a round of 200 claims split into %d", len(g))
	}
	if g := splitRound([]*batch{mk(0, 5000)}); len(g) != 1 {
		t.Errorf("one partition's round split into %d", len(g))
	}
	big := []*batch{mk(0, 1500), mk(1, 1000), mk(2, 700), mk(3, 300)}
	g := splitRound(big)
	if len(g) != 2 {
		t.Fatalf("a round of 3500 claims split into %d groups, want 2", len(g))
	}
	sizes, seen := [2]int{}, map[int32]int{}
	for i, grp := range g {
		for _, b := range grp {
			sizes[i] += len(b.ins)
			seen[b.st.partition]++
		}
	}
	if sizes[0] != 1800 && sizes[0] != 1700 || sizes[0]+sizes[1] != 3500 || len(seen) != 4 {
		t.Errorf("groups of %v claims over partitions %v; want 1800 and 1700, every partition once", sizes, seen)
	}
}
