package registrations

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/kafka"
	"github.com/usernameregistry/registry/internal/testenv"
)

const tailPartitions = 3

// tailBroker gives the test a broker with the registry's topics and
// returns its client options and a producer that honours each record's
// partition.
func tailBroker(t *testing.T) ([]kgo.Opt, *kgo.Client) {
	t.Helper()
	brokers, prod := testenv.Topics(t, tailPartitions)
	return []kgo.Opt{kgo.SeedBrokers(brokers...)}, prod
}

// rejection is a decision for claim record offset in partition p.
func rejection(id string, p int32, offset int64, reason string) *events.Decision {
	return &events.Decision{RequestID: id, Username: id, Canonical: id, Outcome: events.OutcomeRejected, Reason: reason, ClaimPartition: p, ClaimOffset: offset, PolicyVersion: 1}
}

// tailed is a Tail running in the background.
type tailed struct {
	got   chan *events.Decision
	stats *TailStats
	done  chan error
	stop  context.CancelFunc
}

func startTail(t *testing.T, cfg TailConfig) *tailed {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tl := &tailed{got: make(chan *events.Decision, 1000), stats: &TailStats{}, done: make(chan error, 1), stop: cancel}
	cfg.Stats, cfg.Logger = tl.stats, slog.New(slog.DiscardHandler)
	go func() {
		tl.done <- Tail(ctx, cfg, func(d *events.Decision, _ *kgo.Record) error {
			tl.got <- d
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-tl.done; err != nil {
			t.Errorf("Tail: %v", err)
		}
	})
	return tl
}

// next returns the next n decisions, failing the test after a deadline.
func (tl *tailed) next(t *testing.T, n int) []*events.Decision {
	t.Helper()
	var out []*events.Decision
	deadline := time.After(10 * time.Second)
	for len(out) < n {
		select {
		case d := <-tl.got:
			out = append(out, d)
		case <-deadline:
			t.Fatalf("got %d decisions, want %d: %v", len(out), n, ids(out))
		}
	}
	return out
}

func ids(ds []*events.Decision) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.RequestID
	}
	return out
}

func TestTailFromBeginningSeesEverythingInPartitionOrder(t *testing.T) {
	t.Parallel()
	opts, prod := tailBroker(t)
	var want []*events.Decision
	for i := range 9 {
		p := int32(i % tailPartitions)
		want = append(want, rejection(fmt.Sprintf("r%d", i), p, int64(i/tailPartitions), events.ReasonTaken))
	}
	testenv.PublishDecisions(t, prod, time.Time{}, want...)
	tl := startTail(t, TailConfig{Kafka: opts, FromBeginning: true, Since: time.Hour})
	got := tl.next(t, len(want))
	for p := range int32(tailPartitions) {
		var offsets []int64
		for _, d := range got {
			if d.ClaimPartition == p {
				offsets = append(offsets, d.ClaimOffset)
			}
		}
		if !slices.IsSorted(offsets) || len(offsets) != 3 {
			t.Errorf("partition %d delivered claim offsets %v, want 3 in order", p, offsets)
		}
	}
}

// TestTailFromEndSeesOnlyNewDecisions cannot know when Tail has listed
// its start offsets, so it publishes new decisions until one arrives: any
// decision published before Tail started lies before them in the same
// partition and would have arrived first.
func TestTailFromEndSeesOnlyNewDecisions(t *testing.T) {
	t.Parallel()
	opts, prod := tailBroker(t)
	testenv.PublishDecisions(t, prod, time.Time{}, rejection("old", 1, 0, events.ReasonTaken))
	tl := startTail(t, TailConfig{Kafka: opts})
	deadline := time.Now().Add(10 * time.Second)
	for i := int64(1); ; i++ {
		testenv.PublishDecisions(t, prod, time.Time{}, rejection(fmt.Sprintf("new%d", i), 1, i, events.ReasonTaken))
		select {
		case d := <-tl.got:
			if d.RequestID == "old" {
				t.Fatal("a decision published before the tail started was delivered")
			}
			return
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no new decision delivered")
		}
	}
}

func TestTailSincePicksByTimestamp(t *testing.T) {
	t.Parallel()
	opts, prod := tailBroker(t)
	old, recent := time.Now().Add(-2*time.Hour), time.Now().Add(-time.Minute)
	// In every partition the old decision comes first, so once the recent
	// ones have arrived an old one can no longer be on its way.
	for p := range int32(tailPartitions) {
		testenv.PublishDecisions(t, prod, old, rejection(fmt.Sprintf("old%d", p), p, 0, events.ReasonTaken))
		testenv.PublishDecisions(t, prod, recent, rejection(fmt.Sprintf("recent%d", p), p, 1, events.ReasonTaken))
	}
	tl := startTail(t, TailConfig{Kafka: opts, Since: 10 * time.Minute})
	got := ids(tl.next(t, tailPartitions))
	slices.Sort(got)
	if want := []string{"recent0", "recent1", "recent2"}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestTailDropsCopiesAndSkipsUnreadableRecords(t *testing.T) {
	t.Parallel()
	opts, prod := tailBroker(t)
	first := rejection("a", 2, 0, events.ReasonTaken)
	// Same request_id, another claim record: a different decision.
	conflict := rejection("a", 2, 1, events.ReasonRequestConflict)
	poison := &kgo.Record{Topic: events.TopicRegistrations, Partition: 2, Value: []byte("poison")}
	testenv.PublishDecisions(t, prod, time.Time{}, first, first)
	if err := prod.ProduceSync(context.Background(), poison).FirstErr(); err != nil {
		t.Fatal(err)
	}
	testenv.PublishDecisions(t, prod, time.Time{}, conflict, first, rejection("end", 2, 2, events.ReasonTaken))
	tl := startTail(t, TailConfig{Kafka: opts, FromBeginning: true})
	got := tl.next(t, 3)
	if !slices.Equal(ids(got), []string{"a", "a", "end"}) || got[1].Reason != events.ReasonRequestConflict {
		t.Fatalf("got %v", ids(got))
	}
	if d, s := tl.stats.Duplicates.Load(), tl.stats.Skipped.Load(); d != 2 || s != 1 {
		t.Fatalf("duplicates %d, skipped %d; want 2 and 1", d, s)
	}
	if n := tl.stats.Decisions.Load(); n != 3 {
		t.Fatalf("decisions %d, want 3", n)
	}
}

func TestTailReturnsErrorFromFn(t *testing.T) {
	t.Parallel()
	opts, prod := tailBroker(t)
	testenv.PublishDecisions(t, prod, time.Time{}, rejection("a", 0, 0, events.ReasonTaken))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stop := errors.New("stop")
	err := Tail(ctx, TailConfig{Kafka: opts, FromBeginning: true, Logger: slog.New(slog.DiscardHandler)},
		func(*events.Decision, *kgo.Record) error { return stop })
	if !errors.Is(err, stop) {
		t.Fatalf("got %v, want fn's error", err)
	}
}

func TestTailStopsCleanlyWhenContextEnds(t *testing.T) {
	t.Parallel()
	opts, _ := tailBroker(t)
	for _, wait := range []time.Duration{0, 100 * time.Millisecond} {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		err := Tail(ctx, TailConfig{Kafka: opts, Logger: slog.New(slog.DiscardHandler)},
			func(*events.Decision, *kgo.Record) error { return nil })
		cancel()
		if err != nil {
			t.Errorf("cancelled after %v: %v, want nil", wait, err)
		}
	}
}

func TestTailWithoutTopicIsAnError(t *testing.T) {
	t.Parallel()
	broker, err := kafka.Embedded("", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = Tail(ctx, TailConfig{Kafka: []kgo.Opt{kgo.SeedBrokers(broker.ListenAddrs()...)}, Logger: slog.New(slog.DiscardHandler)},
		func(*events.Decision, *kgo.Record) error { return nil })
	if err == nil || ctx.Err() != nil {
		t.Fatalf("got %v before the deadline, want an error", err)
	}
	t.Log(err)
}

func TestRecentKeysForgetsOldestFirst(t *testing.T) {
	t.Parallel()
	r := &recentKeys{max: 2, keys: map[decisionKey]struct{}{}}
	k := func(id string) decisionKey { return decisionKey{requestID: id} }
	steps := []struct {
		key  string
		want bool
	}{{"a", true}, {"b", true}, {"a", false}, {"c", true}, {"a", true}, {"c", false}, {"b", true}}
	for i, s := range steps {
		if got := r.add(k(s.key)); got != s.want {
			t.Fatalf("step %d: add(%s) = %v, want %v", i, s.key, got, s.want)
		}
	}
	if len(r.keys) != 2 || len(r.ring) != 2 {
		t.Fatalf("holds %d keys in a ring of %d, want 2 and 2", len(r.keys), len(r.ring))
	}
}
