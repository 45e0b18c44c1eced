package stack_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/app/stack/stacktest"
	"github.com/usernameregistry/registry/projector"
)

// load sends n claims over names hot names from workers goroutines, each
// by a new user, waiting briefly (undecided claims answer 202). It calls
// midway once half are sent.
func load(t *testing.T, api *stacktest.APINode, n, names, workers int, midway func()) {
	t.Helper()
	var sent atomic.Int64
	var once sync.Once
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				rep := do(t, "POST", api.URL+"/v1/claims?wait=50ms", claimBody(newID(), newID(), fmt.Sprintf("hot%02d", i%names)))
				if rep.Code != http.StatusCreated && rep.Code != http.StatusConflict && rep.Code != http.StatusAccepted {
					t.Errorf("claim answered %d %+v", rep.Code, rep)
				}
				if sent.Add(1) == int64(n/2) {
					once.Do(midway)
				}
			}
		})
	}
	wg.Wait()
}

// TestProjectorRestartMidStream: a projector stopped and another started
// while claims flow. No claim is skipped, none is decided twice, and every
// name goes to the first claim for it in log order.
func TestProjectorRestartMidStream(t *testing.T) {
	t.Parallel()
	r := stacktest.Start(t, stacktest.Options{APIs: 1})
	first := r.StartProjector()
	load(t, r.APIs[0], 600, 40, 8, func() {
		if err := first.Stop(); err != nil {
			t.Errorf("first projector: %v", err)
		}
		time.Sleep(200 * time.Millisecond) // claims pile up undecided
		r.StartProjector()
	})
	waitSettled(t, r)
	led := checkAgreement(t, r)
	if len(led) != 600 {
		t.Errorf("ledger holds %d requests, want 600", len(led))
	}
	if h := holders(t, r); len(h) != 40 {
		t.Errorf("%d names held, want 40", len(h))
	}
}

// TestTwoProjectorsRebalance: two projectors in one group while
// partitions move between them: a second member joins, then the first
// leaves, all under load.
func TestTwoProjectorsRebalance(t *testing.T) {
	t.Parallel()
	r := stacktest.Start(t, stacktest.Options{APIs: 1})
	first := r.StartProjector()
	var second *stacktest.Projector
	load(t, r.APIs[0], 400, 30, 8, func() { second = r.StartProjector() })
	load(t, r.APIs[0], 400, 30, 8, func() {
		if err := first.Stop(); err != nil {
			t.Errorf("first projector: %v", err)
		}
	})
	waitSettled(t, r)
	led := checkAgreement(t, r)
	if len(led) != 800 {
		t.Errorf("ledger holds %d requests, want 800", len(led))
	}
	if h := holders(t, r); len(h) != 30 {
		t.Errorf("%d names held, want 30", len(h))
	}
	select {
	case <-second.Done():
		t.Errorf("second projector stopped by itself: %v", second.Err())
	default:
	}
}

// TestPoisonRecords: records that are not claims, or claims that break
// the rules, are decided invalid and never block their partition.
func TestPoisonRecords(t *testing.T) {
	t.Parallel()
	r := stacktest.Start(t, stacktest.Options{Projectors: 1, APIs: 1})
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, r.Kafka...), kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	good := &events.ClaimSubmitted{RequestID: newID(), UserID: newID(), Username: "judy", Canonical: "judy", Key: "judy", PolicyVersion: 1}
	part := events.Partition([]byte("judy"), 12)
	wrongKey := *good
	wrongKey.RequestID, wrongKey.Canonical = newID(), "JUDY"
	oldPolicy := *good
	oldPolicy.RequestID, oldPolicy.PolicyVersion = newID(), 0
	nul := *good // PostgreSQL text cannot hold NUL: this must not wedge the batch
	nul.RequestID, nul.UserID, nul.Username = newID(), "\x00", "ju\x00dy"
	recs := []*kgo.Record{
		{Topic: events.TopicClaims, Partition: part, Key: []byte("judy"), Value: []byte("not json at all")},
		{Topic: events.TopicClaims, Partition: part, Key: []byte("judy"), Value: []byte(`{"request_id":"nope"}`),
			Headers: []kgo.RecordHeader{{Key: events.HeaderType, Value: []byte(events.TypeClaimSubmitted)}}},
		mustClaim(t, &wrongKey, part),
		mustClaim(t, &oldPolicy, part),
		mustClaim(t, &nul, part),
		mustClaim(t, good, (part+1)%12), // right key, wrong partition
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// A claim behind the poison, through the API: decided, not blocked.
	want(t, "claim behind poison", post(t, r.APIs[0], newID(), newID(), "judy"), http.StatusCreated, "registered", "", "")
	waitSettled(t, r)
	led := ledger(t, r)
	invalid := 0
	for _, row := range led {
		if row.outcome == events.OutcomeRejected {
			var d events.Decision
			if err := unmarshal(row.decision, &d); err != nil || d.Reason != events.ReasonInvalid || d.Detail == "" {
				t.Errorf("poison decision %s: %v", row.decision, err)
			}
			invalid++
		}
	}
	if invalid != len(recs) {
		t.Errorf("%d poison records decided invalid, want %d; ledger %d rows", invalid, len(recs), len(led))
	}
	checkAgreement(t, r)
}

func mustClaim(t *testing.T, c *events.ClaimSubmitted, part int32) *kgo.Record {
	rec, err := events.ClaimRecord(c)
	if err != nil {
		t.Fatal(err)
	}
	rec.Partition = part
	return rec
}

// TestHaltsWhenOffsetBeyondLogEnd: a stored offset past the log end means
// the broker lost decided claims; the projector halts naming the
// partition and both offsets instead of skipping.
func TestHaltsWhenOffsetBeyondLogEnd(t *testing.T) {
	t.Parallel()
	r := stacktest.Start(t, stacktest.Options{Partitions: 3})
	if _, err := r.Pool.Exec(context.Background(),
		`INSERT INTO claim_partitions (partition, next_offset, owner_epoch) VALUES (0, 0, 0), (1, 57, 0), (2, 0, 0)`); err != nil {
		t.Fatal(err)
	}
	p := r.StartProjector()
	select {
	case <-p.Done():
		if err := p.Err(); !errors.Is(err, projector.ErrOffsetBeyondLogEnd) || !contains(err.Error(), "partition 1", "57", "log end offset 0") {
			t.Errorf("projector stopped with %v, want ErrOffsetBeyondLogEnd naming partition 1 and both offsets", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("projector did not halt on an offset beyond the log end")
	}
}

// TestOutboxRelayedOnAssignment: a decision committed but never published
// (a crash between commit and publish) is published as soon as a
// projector is assigned its partition, even if no claim follows it.
func TestOutboxRelayedOnAssignment(t *testing.T) {
	t.Parallel()
	r := stacktest.Start(t, stacktest.Options{Partitions: 3})
	body := []byte(`{"request_id":"` + newID() + `","outcome":"rejected","reason":"invalid","claim_partition":2,"claim_offset":0,"policy_version":1}`)
	if _, err := r.Pool.Exec(context.Background(),
		`INSERT INTO outbox (claim_partition, key, event_type, value) VALUES (2, 'k', $1, $2)`, events.TypeClaimRejected, body); err != nil {
		t.Fatal(err)
	}
	r.StartProjector()
	waitSettled(t, r)
	recs := readTopic(t, r, events.TopicRegistrations)
	if len(recs) != 1 || recs[0].Partition != 2 || string(recs[0].Value) != string(body) || string(recs[0].Key) != "k" {
		t.Fatalf("registrations after assignment: %d records %v", len(recs), recs)
	}
}

// TestProjectorRejoinsAfterFence: bumping every partition's epoch under
// running projectors, as a rebuild's swap does, fences each of them on its
// next batch; each leaves the group, joins again, and carries on from the
// stored offsets. Nothing is skipped or decided twice.
func TestProjectorRejoinsAfterFence(t *testing.T) {
	t.Parallel()
	r := stacktest.Start(t, stacktest.Options{APIs: 1})
	r.StartProjector()
	r.StartProjector()
	load(t, r.APIs[0], 400, 30, 8, func() {
		if _, err := r.Pool.Exec(context.Background(), `UPDATE claim_partitions SET owner_epoch = owner_epoch + 1`); err != nil {
			t.Errorf("bumping epochs: %v", err)
		}
	})
	waitSettled(t, r)
	led := checkAgreement(t, r)
	if len(led) != 400 {
		t.Errorf("ledger holds %d requests, want 400", len(led))
	}
	if h := holders(t, r); len(h) != 30 {
		t.Errorf("%d names held, want 30", len(h))
	}
	// Claims after the fence are decided too: the projectors rejoined.
	rep := post(t, r.APIs[0], newID(), newID(), "after-the-fence")
	if rep.Code != http.StatusCreated {
		t.Fatalf("claim after the fence answered %d %+v", rep.Code, rep)
	}
}

// TestBacklogDrain: claims pile up with no projector running, then one
// starts and decides the backlog in large rounds, which it splits into
// transactions committed side by side. Every claim is decided once, the
// copies agree, and each name goes to the first claim for it in log order.
func TestBacklogDrain(t *testing.T) {
	t.Parallel()
	r := stacktest.Start(t, stacktest.Options{APIs: 1})
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < 4000; i += 16 {
				rep := do(t, "POST", r.APIs[0].URL+"/v1/claims?wait=1ms", claimBody(newID(), newID(), fmt.Sprintf("backlog%03d", i%700)))
				if rep.Code != http.StatusAccepted {
					t.Errorf("claim with no projector answered %d %+v", rep.Code, rep)
				}
			}
		})
	}
	wg.Wait()
	r.StartProjector()
	waitSettled(t, r)
	if led := checkAgreement(t, r); len(led) != 4000 {
		t.Errorf("ledger holds %d requests, want 4000", len(led))
	}
	if h := holders(t, r); len(h) != 700 {
		t.Errorf("%d names held, want 700", len(h))
	}
}
