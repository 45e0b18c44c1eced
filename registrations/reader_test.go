package registrations

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// start runs a Reader on a fresh broker holding one old decision,
// and returns it positioned, with a producer for registrations.
func start(t *testing.T, maxWaiters int) (*Reader, *kgo.Client) {
	t.Helper()
	brokers, prod := testenv.Topics(t, 3)
	opts := []kgo.Opt{kgo.SeedBrokers(brokers...)}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	t.Cleanup(func() { cancel(); <-ran })             // the reader has stopped before the test ends
	publish(t, prod, "old", events.OutcomeRegistered) // before the reader: must never be delivered
	r, err := NewReader(ReaderConfig{Kafka: opts, MaxWaiters: maxWaiters, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Subscribe("x"); !errors.Is(err, ErrNotPositioned) {
		t.Fatalf("Subscribe before Run: %v, want ErrNotPositioned", err)
	}
	go func() { defer close(ran); r.Run(ctx) }() //nolint:errcheck // a stopped reader's error is not the test's subject
	select {
	case <-r.Positioned():
	case <-time.After(10 * time.Second):
		t.Fatal("reader not positioned")
	}
	return r, prod
}

func publish(t *testing.T, prod *kgo.Client, requestID, outcome string) {
	t.Helper()
	testenv.PublishDecisions(t, prod, time.Time{}, &events.Decision{RequestID: requestID, Canonical: requestID, Outcome: outcome, ClaimPartition: 1})
}

func TestReaderRoutesByRequestID(t *testing.T) {
	t.Parallel()
	r, prod := start(t, 10)
	old, cancelOld, _ := r.Subscribe("old")
	defer cancelOld()
	a1, cancelA1, _ := r.Subscribe("a")
	a2, cancelA2, _ := r.Subscribe("a") // a retry waiting on the same request_id
	defer cancelA1()
	defer cancelA2()
	bad := &kgo.Record{Topic: events.TopicRegistrations, Partition: 1, Value: []byte("poison")}
	if err := prod.ProduceSync(context.Background(), bad).FirstErr(); err != nil {
		t.Fatal(err)
	}
	publish(t, prod, "b", events.OutcomeRejected)
	publish(t, prod, "a", events.OutcomeRegistered)
	for i, ch := range []<-chan *events.Decision{a1, a2} {
		select {
		case d := <-ch:
			if d.RequestID != "a" {
				t.Errorf("subscriber %d got %+v", i, d)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("subscriber %d got nothing", i)
		}
	}
	select {
	case d := <-old:
		t.Errorf("a decision published before the reader started was delivered: %+v", d)
	default:
	}
}

func TestReaderBoundsWaiters(t *testing.T) {
	t.Parallel()
	r, _ := start(t, 2)
	_, c1, err1 := r.Subscribe("a")
	_, c2, err2 := r.Subscribe("b")
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if _, _, err := r.Subscribe("c"); !errors.Is(err, ErrTooManyWaiters) {
		t.Fatalf("third subscription: %v, want ErrTooManyWaiters", err)
	}
	c1()
	c1() // cancel is idempotent: it must not free a second slot
	if r.Waiting() != 1 {
		t.Fatalf("waiting %d after one cancel, want 1", r.Waiting())
	}
	if _, c3, err := r.Subscribe("c"); err != nil {
		t.Fatalf("subscription after a cancel: %v", err)
	} else {
		c3()
	}
	c2()
	if r.Waiting() != 0 {
		t.Fatalf("waiting %d, want 0", r.Waiting())
	}
}
