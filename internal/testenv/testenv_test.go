package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/kafka"
)

func TestMain(m *testing.M) { Main(m) }

// TestExclusiveRecreatesTopics runs the shared-broker path on kfake: after
// exclusive, EnsureTopics must create fresh topics, not find the old ones
// with their records.
func TestExclusiveRecreatesTopics(t *testing.T) {
	t.Parallel()
	c, err := kafka.Embedded("", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	brokers := c.ListenAddrs()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// A new client for each step: kgo caches metadata, even a raw
	// request's answer, for a few seconds.
	cl := newClient(t, brokers)
	if _, err := kafka.EnsureTopics(ctx, kadm.NewClient(cl), 3, -1); err != nil {
		t.Fatal(err)
	}
	rec := &kgo.Record{Topic: events.TopicClaims, Partition: 0, Value: []byte("old")}
	if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		t.Fatal(err)
	}

	exclusive(t, brokers, "kfake")
	topics := []string{events.TopicClaims, events.TopicRegistrations}
	if still, err := listed(ctx, newClient(t, brokers), topics); err != nil || len(still) > 0 {
		t.Fatalf("after exclusive the broker lists %v (%v); want no registry topics", still, err)
	}

	adm := kadm.NewClient(newClient(t, brokers))
	if n, err := kafka.EnsureTopics(ctx, adm, 6, -1); err != nil || n != 6 {
		t.Fatalf("EnsureTopics after exclusive = %d, %v; want 6 fresh partitions", n, err)
	}
	ends, err := adm.ListEndOffsets(ctx, events.TopicClaims)
	if err != nil {
		t.Fatal(err)
	}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil || o.Offset != 0 {
			t.Errorf("claims partition %d ends at %d (%v); want an empty new topic", o.Partition, o.Offset, o.Err)
		}
	})
}

func newClient(t *testing.T, brokers []string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}
