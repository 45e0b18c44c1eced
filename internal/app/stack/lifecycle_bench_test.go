package stack_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/app/stack/stacktest"
)

// BenchmarkRenameLatency measures, against one in-process registry (one
// projector, one API node, 12 partitions, kfake and a private PostgreSQL),
// the latency of a claim and of a rename (three saga steps, usually in
// two partitions) as a client sees them over HTTP, one request at a time,
// and reports p50 and p99 of each. Run it with -benchtime 1x; it makes 300
// of each per iteration.
func BenchmarkRenameLatency(b *testing.B) {
	r := stacktest.Start(b, stacktest.Options{Projectors: 1, APIs: 1, HoldPeriod: time.Hour})
	api := r.APIs[0]
	const n = 300
	for range b.N {
		var claimsT, renamesT []time.Duration
		user := uuid.NewString()
		tag := uuid.NewString()[:6]
		for i := range n {
			start := time.Now()
			got := do(b, "POST", api.URL+"/v1/claims?wait=30s", claimBody("", user, fmt.Sprintf("c%s%d", tag, i)))
			claimsT = append(claimsT, time.Since(start))
			if got.Code != http.StatusCreated {
				b.Fatalf("claim: %d %+v", got.Code, got)
			}
		}
		for i := range n {
			start := time.Now()
			got := do(b, "POST", api.URL+"/v1/renames?wait=30s", jsonBody("user_id", user, "from", fmt.Sprintf("c%s%d", tag, i), "to", fmt.Sprintf("r%s%d", tag, i)))
			renamesT = append(renamesT, time.Since(start))
			if got.Code != http.StatusCreated {
				b.Fatalf("rename: %d %+v", got.Code, got)
			}
		}
		p := func(ds []time.Duration, q float64) float64 {
			slices.Sort(ds)
			return float64(ds[int(q*float64(len(ds)-1))].Microseconds()) / 1000
		}
		b.ReportMetric(p(claimsT, 0.5), "claim-p50-ms")
		b.ReportMetric(p(claimsT, 0.99), "claim-p99-ms")
		b.ReportMetric(p(renamesT, 0.5), "rename-p50-ms")
		b.ReportMetric(p(renamesT, 0.99), "rename-p99-ms")
	}
}

// BenchmarkDrainMix writes a backlog of commands straight to claims with no
// projector running (per 10: 6 claims, 1 release, 1 rename, 1
// reservation, 1 transfer, over names that exist), then starts one
// projector and reports how many claims records per second it decides
// until everything (including the renames' steps 2 and 3, which it writes
// itself) is decided and published.
func BenchmarkDrainMix(b *testing.B) {
	b.Run("mix", func(b *testing.B) { drain(b, true) })
	b.Run("claims-only", func(b *testing.B) { drain(b, false) })
}

// drain is BenchmarkDrainMix with the mix, or with only claims (the same
// number of records) for comparison on the same machine and harness.
func drain(b *testing.B, mix bool) {
	for range b.N {
		r := stacktest.Start(b, stacktest.Options{Partitions: 12})
		cl, err := kgo.NewClient(append(r.Kafka, kgo.ProducerLinger(5*time.Millisecond))...)
		if err != nil {
			b.Fatal(err)
		}
		const groups = 3000 // of 10 commands
		tag := uuid.NewString()[:6]
		var recs []*kgo.Record
		add := func(typ, user, name string, rename *events.RenameStep) {
			nm, err := username.Normalize(name)
			if err != nil {
				b.Fatal(err)
			}
			id := uuid.NewString()
			if rename != nil {
				rename.RequestID = id
			}
			rec, err := events.CommandRecord(typ, &events.ClaimSubmitted{RequestID: id, UserID: user, Username: name, Canonical: nm.Canonical, Key: nm.Key,
				PolicyVersion: username.Latest, HoldSeconds: 3600, Rename: rename})
			if err != nil {
				b.Fatal(err)
			}
			recs = append(recs, rec)
		}
		for g := range groups {
			u := uuid.NewString()
			name := func(i int) string { return fmt.Sprintf("d%s-%d-%d", tag, g, i) }
			if !mix {
				for i := range 12 {
					add(events.TypeClaimSubmitted, u, name(i), nil)
				}
				continue
			}
			for i := range 6 {
				add(events.TypeClaimSubmitted, u, name(i), nil)
			}
			add(events.TypeReleaseSubmitted, u, name(0), nil)
			f, _ := username.Normalize(name(1))
			to := name(1) + "x"
			tn, _ := username.Normalize(to)
			add(events.TypeRenameSubmitted, u, name(1), &events.RenameStep{From: name(1), FromCanonical: f.Canonical, FromKey: f.Key, To: to, ToCanonical: tn.Canonical, ToKey: tn.Key})
			add(events.TypeReservationSubmitted, "", name(9), nil)
			add(events.TypeTransferSubmitted, uuid.NewString(), name(2), nil)
		}
		if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			b.Fatal(err)
		}
		cl.Close()
		start := time.Now()
		r.StartProjector()
		waitSettled(b, r)
		took := time.Since(start)
		var decided int64
		if err := r.Pool.QueryRow(context.Background(), `SELECT sum(next_offset) FROM claim_partitions`).Scan(&decided); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(decided)/took.Seconds(), "records/s")
		b.ReportMetric(float64(decided), "records")
	}
}
