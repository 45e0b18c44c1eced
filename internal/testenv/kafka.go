package testenv

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/testcontainers/testcontainers-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/kafka"
)

// externalKafka serialises tests on a shared broker (TEST_KAFKA_BROKERS
// or the container): the topic names are fixed by the wire contract, so two
// tests cannot share one.
var externalKafka sync.Mutex

// sharedKafka is the Kafka container under REGISTRY_TEST_DOCKER=1, started
// at first use and shared by the test binary's tests.
var sharedKafka broker

type broker struct {
	once      sync.Once
	seeds     []string
	err       error
	container testcontainers.Container
}

func (b *broker) start() { b.container, b.seeds, b.err = startKafka() }

func (b *broker) stop() {
	if b.container != nil {
		testcontainers.TerminateContainer(b.container) //nolint:errcheck // best effort at exit; Ryuk reaps it otherwise
	}
}

// Kafka returns seed brokers for a broker that only t uses: an in-process
// kfake, or a shared broker (TEST_KAFKA_BROKERS, Apache Kafka under
// TEST_KAFKA=apache, or the container under REGISTRY_TEST_DOCKER=1) held
// for t with the registry's topics deleted first.
func Kafka(t T) []string {
	t.Helper()
	env, c := selected()
	switch c.Kafka {
	case sourceEnv:
		return exclusive(t, kafka.ParseBrokers(env.KafkaBrokers), "Kafka at TEST_KAFKA_BROKERS")
	case sourceApache:
		apacheKafka.once.Do(apacheKafka.start)
		if apacheKafka.err != nil {
			unavailable(t, "Apache Kafka: %v", apacheKafka.err)
		}
		return exclusive(t, apacheKafka.cluster.Addrs(), describeKafka(sourceApache))
	case sourceDocker:
		sharedKafka.once.Do(sharedKafka.start)
		if sharedKafka.err != nil {
			unavailable(t, "Kafka: %v", sharedKafka.err)
		}
		return exclusive(t, sharedKafka.seeds, "the "+kafkaImage+" container")
	}
	cl, err := kafka.Embedded("", 0)
	if err != nil {
		unavailable(t, "embedded Kafka broker: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl.ListenAddrs()
}

// EmbeddedKafka reports whether Kafka gives tests the in-process kfake,
// rather than a real Kafka (Apache Kafka from jars, the container, or
// TEST_KAFKA_BROKERS). Only tests that pin down a documented difference
// between the two (docs/design.md, "Apache Kafka and kfake") need it; every
// other test must pass on both alike.
func EmbeddedKafka() bool {
	_, c := selected()
	return c.Kafka == sourceLocal
}

// exclusive holds the shared broker at brokers for t until t ends, and
// deletes the registry's topics on it first.
func exclusive(t T, brokers []string, what string) []string {
	t.Helper()
	externalKafka.Lock()
	t.Cleanup(externalKafka.Unlock)
	deleteTopics(t, brokers, what)
	return brokers
}

// deleteTopics deletes the registry's topics and waits until the broker no
// longer lists them. Real Kafka finishes a deletion after answering: until
// then, creating a topic again may answer TOPIC_ALREADY_EXISTS (marked for
// deletion), which kafka.EnsureTopics would take for the old topic, records
// and all.
func deleteTopics(t T, brokers []string, what string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topics := []string{events.TopicClaims, events.TopicRegistrations}
	resp, err := adm.DeleteTopics(ctx, topics...)
	if err != nil {
		unavailable(t, "%s: %v", what, err)
	}
	for _, r := range resp.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.UnknownTopicOrPartition) {
			t.Fatalf("deleting topic %s on %s: %v", r.Topic, what, r.Err)
		}
	}
	if err := awaitGone(ctx, cl, topics); err != nil {
		t.Fatalf("deleting topics on %s: %v", what, err)
	}
}

// awaitGone polls the broker until it lists none of topics.
func awaitGone(ctx context.Context, cl *kgo.Client, topics []string) error {
	still := topics
	for {
		names, err := listed(ctx, cl, topics)
		if err == nil {
			if len(names) == 0 {
				return nil
			}
			still = names
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%v still listed after deletion: %w", still, cmp.Or(err, ctx.Err()))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// listed returns which of topics the broker lists, asking it each time:
// kadm answers from a metadata cache that may be seconds old.
func listed(ctx context.Context, cl *kgo.Client, topics []string) ([]string, error) {
	req := kmsg.NewPtrMetadataRequest()
	for _, topic := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(topic)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, t := range resp.Topics {
		if t.Topic != nil && t.ErrorCode != kerr.UnknownTopicOrPartition.Code {
			names = append(names, *t.Topic)
		}
	}
	return names, nil
}

// Logger returns a logger that writes through t.Log, so a failing test
// shows what the parts said.
// Lines written after t ends are dropped: background goroutines may
// outlive it by a moment.
func Logger(t T) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(func() { w.done.Store(true) })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct {
	t    T
	done atomic.Bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

// Topics gives t a broker (as Kafka does) holding the registry's topics
// with the given partition count. It returns the seed brokers and a
// producer that honours each record's Partition, for tests that write
// claims or decisions straight to the topics.
func Topics(t T, partitions int32) ([]string, *kgo.Client) {
	t.Helper()
	brokers := Kafka(t)
	prod, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatalf("kafka client: %v", err)
	}
	t.Cleanup(prod.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := kafka.EnsureTopics(ctx, kadm.NewClient(prod), partitions, -1); err != nil {
		t.Fatalf("creating topics: %v", err)
	}
	return brokers, prod
}

// PublishDecisions writes decisions to the registrations topic as the
// projector does (on their claim's partition), stamped ts; a zero ts
// lets the broker stamp them.
func PublishDecisions(t T, prod *kgo.Client, ts time.Time, ds ...*events.Decision) {
	t.Helper()
	recs := make([]*kgo.Record, len(ds))
	for i, d := range ds {
		body, err := events.DecisionValue(d)
		if err != nil {
			t.Fatalf("encoding decision: %v", err)
		}
		recs[i] = events.DecisionRecord([]byte(d.Canonical), d.ClaimPartition, d.Type(), body)
		recs[i].Timestamp = ts
	}
	if err := prod.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatalf("publishing decisions: %v", err)
	}
}
