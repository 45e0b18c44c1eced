package upgrade_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/kafka"
	"github.com/usernameregistry/registry/internal/testenv"
	"github.com/usernameregistry/registry/projector"
	"github.com/usernameregistry/registry/projector/upgrade"
)

// BenchmarkUpgrade measures a policy upgrade of a version-1 registry of
// REGISTRY_UPGRADE_BENCH_NAMES names (default 100000; one in a thousand
// pairs is a collision group under version 2) over 12 partitions with one
// projector, on the test broker and database: the upgrade's wall time and
// the longest time any partition spent between its freeze and its
// activation (refusing commands). Run it once:
//
//	REGISTRY_UPGRADE_BENCH_NAMES=1000000 go test ./projector/upgrade -run '^$' -bench Upgrade -benchtime 1x -timeout 60m
func BenchmarkUpgrade(b *testing.B) {
	names := 100000
	if v := os.Getenv("REGISTRY_UPGRADE_BENCH_NAMES"); v != "" {
		var err error
		if names, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	for range b.N {
		b.StopTimer()
		const parts = 12
		brokers, prod := testenv.Topics(b, parts)
		pool, _ := testenv.Database(b)
		ctx := context.Background()
		if err := projector.RequirePolicyVersion(ctx, pool, 1); err != nil {
			b.Fatal(err)
		}
		opts := kafka.ClientOptions(brokers, testenv.Logger(b))
		p, err := projector.New(projector.Config{Kafka: opts, Partitions: parts, AdminKeys: keys, Group: "bench-" + uuid.NewString()}, pool)
		if err != nil {
			b.Fatal(err)
		}
		pctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- p.Run(pctx) }()
		fill(b, prod, names, parts)
		start := time.Now()
		waitDecided(b, pool, int64(names))
		b.Logf("%d version-1 claims decided in %s", names, time.Since(start).Round(time.Millisecond))

		up, err := kgo.NewClient(append(opts, kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(20000))...)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		res, err := upgrade.Run(ctx, upgrade.Config{Pool: pool, Producer: up, Partitions: parts, To: 2, AdminKeys: keys, Poll: 10 * time.Millisecond,
			Out: stampedWriter{b: b, start: time.Now()}})
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(res.Elapsed.Seconds(), "s/upgrade")
		b.ReportMetric(res.LongestWait.Seconds(), "s-longest-partition-wait")
		b.ReportMetric(float64(res.Carried), "carried")
		b.Logf("upgrade of %d names: %s, %d carried, longest partition wait %s", names, res.Elapsed.Round(time.Millisecond), res.Carried, res.LongestWait.Round(time.Millisecond))
		up.Close()
		stop()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
}

// fill writes n version-1 claims, each a name of its own user; every
// thousandth is a pair ("dogN", "d0gN") that version 2 puts under one key.
func fill(b *testing.B, prod *kgo.Client, n, parts int) {
	b.Helper()
	policy := username.MustVersion(1)
	recs := make([]*kgo.Record, 0, 10000)
	flush := func() {
		if err := prod.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			b.Fatal(err)
		}
		recs = recs[:0]
	}
	for i := range n {
		typed := fmt.Sprintf("name%d", i)
		if i%1000 == 1 {
			typed = fmt.Sprintf("dog%d", i-1)
		} else if i%1000 == 2 {
			typed = fmt.Sprintf("d0g%d", i-2)
		}
		u, err := policy.Normalize(typed)
		if err != nil {
			b.Fatal(err)
		}
		rec, err := events.ClaimRecord(&events.ClaimSubmitted{RequestID: uuid.NewString(), UserID: uuid.NewString(), Username: typed,
			Canonical: u.Canonical, Key: u.Key, PolicyVersion: 1})
		if err != nil {
			b.Fatal(err)
		}
		rec.Partition = events.Partition(rec.Key, parts)
		if recs = append(recs, rec); len(recs) == cap(recs) {
			flush()
		}
	}
	flush()
}

// waitDecided waits until the projector has stored n decisions.
func waitDecided(b *testing.B, pool *pgxpool.Pool, n int64) {
	b.Helper()
	for deadline := time.Now().Add(30 * time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		var got int64
		if err := pool.QueryRow(context.Background(), `SELECT coalesce(sum(next_offset), 0)::bigint FROM claim_partitions`).Scan(&got); err != nil {
			b.Fatal(err)
		}
		if got >= n {
			return
		}
	}
	b.Fatalf("%d claims not decided in time", n)
}

// stampedWriter logs the upgrade's progress lines with the time since it
// started.
type stampedWriter struct {
	b     *testing.B
	start time.Time
}

func (w stampedWriter) Write(p []byte) (int, error) {
	w.b.Logf("%8s %s", time.Since(w.start).Round(time.Millisecond), p)
	return len(p), nil
}
