package projector

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/usernameregistry/registry/internal/testenv"
)

// TestStoreCoalescedLookups: many concurrent ledger lookups, some of
// decided request_ids and some of unknown ones, each get their own answer
// although they share queries; a malformed id fails alone.
func TestStoreCoalescedLookups(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	ctx := context.Background()
	p := &Projector{cfg: Config{Partitions: testPartitions, Metrics: NewMetrics(nil)}, pool: pool, log: slog.Default()}
	decided := map[string]string{} // request_id → username
	for i := range 20 {
		id, name := uuid.NewString(), "lookup"+string(rune('a'+i))
		rec := record(t, 0, id, uuid.NewString(), name)
		as, err := assign(ctx, pool, []int32{rec.Partition})
		if err != nil {
			t.Fatal(err)
		}
		st := &partitionState{partition: rec.Partition, epoch: as[0].epoch, nextOffset: as[0].nextOffset}
		rec.Offset = st.nextOffset
		if _, err := p.commit(ctx, []*batch{p.batchOf(st, rec)}); err != nil || st.fenced {
			t.Fatalf("commit: %v, fenced %v", err, st.fenced)
		}
		decided[id] = name
	}
	s := NewStore(pool)
	var wg sync.WaitGroup
	for range 5 {
		for id, name := range decided {
			wg.Go(func() {
				d, err := s.Decision(ctx, id)
				if err != nil || d == nil || d.RequestID != id || d.Username != name {
					t.Errorf("lookup of %s: %+v, %v; want the decision for %q", id, d, err, name)
				}
			})
		}
		wg.Go(func() {
			if d, err := s.Decision(ctx, uuid.NewString()); d != nil || err != nil {
				t.Errorf("lookup of an unknown request_id: %+v, %v; want nothing", d, err)
			}
		})
		wg.Go(func() {
			if _, err := s.Decision(ctx, "not-a-uuid"); err == nil {
				t.Error("lookup of a malformed request_id succeeded")
			}
		})
	}
	wg.Wait()
}
