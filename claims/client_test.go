package claims_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/usernameregistry/registry/claims"
	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/kafka"
	"github.com/usernameregistry/registry/registrations"
)

// TestSubmitBoundedWhenBrokerHangs: the broker takes the produce request
// and never answers, as a broker that froze or died mid-request does.
// franz-go's idempotent producer then never fails the record
// (can_fail=false). Submit must still answer ErrUnavailable within the
// write bound, free the waiter slot, and let a caller that leaves go at
// once; with one waiter slot, later claims must get the same answer, not
// "overloaded".
func TestSubmitBoundedWhenBrokerHangs(t *testing.T) {
	t.Parallel()
	c, err := kafka.Embedded("", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	prod, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic("claims"),
		kgo.ProducerLinger(0), kgo.RecordDeliveryTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var closeOnce sync.Once
	closeProd := func() { closeOnce.Do(prod.Close) }
	t.Cleanup(closeProd)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := kafka.EnsureTopics(ctx, kadm.NewClient(prod), 1, -1); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	c.ControlKey(kmsg.Produce.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		c.SleepControl(func() { <-release })
		return nil, nil, false
	})
	reader, err := registrations.NewReader(registrations.ReaderConfig{Kafka: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, MaxWaiters: 1})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stopReader := context.WithCancel(context.Background())
	readerDone := make(chan error, 1)
	go func() { readerDone <- reader.Run(rctx) }()
	t.Cleanup(func() { stopReader(); <-readerDone })
	select {
	case <-reader.Positioned():
	case <-ctx.Done():
		t.Fatal("decisions reader never positioned")
	}
	const bound = 2 * time.Second
	cl, err := claims.NewClient(claims.ClientConfig{Producer: prod, Decisions: reader, WriteTimeout: bound})
	if err != nil {
		t.Fatal(err)
	}
	submit := func(ctx context.Context) (time.Duration, error) {
		start := time.Now()
		done := make(chan error, 1)
		go func() {
			_, err := cl.Submit(ctx, claims.Request{UserID: uuid.NewString(), Username: "hung" + uuid.NewString()[:6]})
			done <- err
		}()
		select {
		case err := <-done:
			return time.Since(start), err
		case <-time.After(bound + 10*time.Second):
			t.Fatalf("Submit still waiting %s after it started; the bound is %s", bound+10*time.Second, bound)
			return 0, nil
		}
	}
	for i := range 2 {
		took, err := submit(context.Background())
		if !errors.Is(err, claims.ErrUnavailable) {
			t.Fatalf("claim %d: %v, want ErrUnavailable", i, err)
		}
		if took > bound+3*time.Second {
			t.Errorf("claim %d answered after %s; the bound is %s", i, took, bound)
		}
		if n := reader.Waiting(); n != 0 {
			t.Fatalf("claim %d left %d waiter slots taken", i, n)
		}
	}
	// A caller that leaves: Submit returns with it, and frees the slot.
	leave, stop := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer stop()
	if took, err := submit(leave); err == nil || took > time.Second {
		t.Errorf("a caller that left after 200ms: %v after %s", err, took)
	}
	if n := reader.Waiting(); n != 0 {
		t.Fatalf("the caller that left kept %d waiter slots", n)
	}
	// Stopping: the producer still holds records whose outcome is
	// unknown; closing it must not wait for the broker.
	closed := make(chan struct{})
	go func() { closeProd(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("closing the producer with unanswered records took over 5s")
	}
}

// feed is a Decisions whose subscriptions receive what the test sends.
type feed struct {
	mu   sync.Mutex
	subs map[string]chan *events.Decision
}

func (f *feed) Subscribe(requestID string) (<-chan *events.Decision, func(), error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan *events.Decision, 8)
	f.subs[requestID] = ch
	return ch, func() {}, nil
}

func (f *feed) send(d *events.Decision) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subs[d.RequestID] <- d
}

// TestAwaitTakesOnlyItsPartitionsDecision: a foreign producer wrote a claim
// for the same payload to the wrong partition, and its invalid decision is
// published while a retry of the request through the client waits. That
// decision is for another record in another partition: the retry is
// answered by the decision of the partition it was written to (its key's),
// here registered, as docs/design.md ("A request_id decided in several
// partitions") says; taking the invalid one would contradict the name the
// user then holds.
func TestAwaitTakesOnlyItsPartitionsDecision(t *testing.T) {
	t.Parallel()
	c, err := kafka.Embedded("", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	prod, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const partitions = 6
	if _, err := kafka.EnsureTopics(ctx, kadm.NewClient(prod), partitions, -1); err != nil {
		t.Fatal(err)
	}
	decisions := &feed{subs: map[string]chan *events.Decision{}}
	cl, err := claims.NewClient(claims.ClientConfig{Producer: prod, Decisions: decisions})
	if err != nil {
		t.Fatal(err)
	}
	id, user := uuid.NewString(), uuid.NewString()
	sub, err := cl.Submit(ctx, claims.Request{RequestID: id, UserID: user, Username: "oscar"})
	if err != nil {
		t.Fatal(err)
	}
	own := events.Partition([]byte("oscar"), partitions)
	base := events.Decision{RequestID: id, UserID: user, Username: "oscar", Canonical: "oscar", PolicyVersion: 2}
	invalid := base
	invalid.Outcome, invalid.Reason, invalid.Detail = events.OutcomeRejected, events.ReasonInvalid, "claim is in the wrong partition"
	invalid.ClaimPartition, invalid.ClaimOffset = (own+1)%partitions, 0
	registered := base
	registered.Outcome, registered.HolderRequestID = events.OutcomeRegistered, id
	registered.ClaimPartition, registered.ClaimOffset = own, 0
	decisions.send(&invalid)
	decisions.send(&registered)
	wait, stop := context.WithTimeout(ctx, 5*time.Second)
	defer stop()
	res := sub.Await(wait)
	if res.Decision == nil {
		t.Fatal("no decision")
	}
	if res.Decision.Outcome != events.OutcomeRegistered || res.Decision.ClaimPartition != own {
		t.Errorf("answered %s %s from partition %d, want registered from partition %d (its own)",
			res.Decision.Outcome, res.Decision.Reason, res.Decision.ClaimPartition, own)
	}
}

// ledgerOf is a Ledger holding fixed decisions.
type ledgerOf map[string]*events.Decision

func (l ledgerOf) Decision(_ context.Context, requestID string) (*events.Decision, error) {
	return l[requestID], nil
}

// TestRetryAcrossPolicyUpgrade: a claim decided under policy version 1
// ("hоt1-6" with a Cyrillic о, confusable with hot1-6) is retried after
// the registry moved to version 2, which refuses mixed scripts. The retry
// gets the stored decision, as every retry of a request does, not a
// refusal that contradicts it (chaos --upgrade, seed 1, found it); the same
// name with a request_id never decided, or with another user, is still
// refused.
func TestRetryAcrossPolicyUpgrade(t *testing.T) {
	prod, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1")) // nothing is produced
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	id, user, typed := uuid.NewString(), uuid.NewString(), "h\u043et1-6"
	stored := &events.Decision{RequestID: id, UserID: user, Username: typed, Canonical: typed, Outcome: events.OutcomeRejected,
		Reason: events.ReasonConfusable, Conflicts: "hot1-6", ClaimPartition: 2, ClaimOffset: 7, PolicyVersion: 1}
	cl, err := claims.NewClient(claims.ClientConfig{Producer: prod, Decisions: &feed{subs: map[string]chan *events.Decision{}},
		Ledger: ledgerOf{id: stored}, Policy: username.MustVersion(2)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res, err := cl.Claim(ctx, claims.Request{RequestID: id, UserID: user, Username: typed})
	if err != nil || res.Decision == nil || res.Decision.Reason != events.ReasonConfusable {
		t.Fatalf("retry of a request decided under version 1: %+v, %v; want its stored confusable", res.Decision, err)
	}
	for _, req := range []claims.Request{
		{RequestID: uuid.NewString(), UserID: user, Username: typed}, // never decided
		{RequestID: id, UserID: uuid.NewString(), Username: typed},   // another user
		{UserID: user, Username: typed},                              // no request_id
	} {
		if _, err := cl.Claim(ctx, req); !errors.Is(err, claims.ErrInvalid) {
			t.Errorf("%+v: %v, want the policy's refusal", req, err)
		}
	}
}
