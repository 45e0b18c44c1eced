package projector_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/kafka"
	"github.com/usernameregistry/registry/internal/testenv"
	"github.com/usernameregistry/registry/projector"
)

// TestTwoRegistriesOnOneBroker: two registries share a broker, each with
// its own pair of topics (projector.Config.Topics) and its own database.
// The same name claimed by a different user in each is granted in each,
// and each registry's decision is published to its own registrations
// topic only.
func TestTwoRegistriesOnOneBroker(t *testing.T) {
	t.Parallel()
	const parts = 3
	brokers := testenv.Kafka(t)
	log := testenv.Logger(t)
	opts := kafka.ClientOptions(brokers, log)
	prod, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	name, err := username.Normalize("alice")
	if err != nil {
		t.Fatal(err)
	}
	type registry struct {
		topics events.Topics
		user   string
	}
	regs := []registry{
		{events.Topics{Claims: "a-claims", Registrations: "a-registrations"}, uuid.NewString()},
		{events.Topics{Claims: "b-claims", Registrations: "b-registrations"}, uuid.NewString()},
	}
	for _, r := range regs {
		if _, err := kafka.EnsureTopicsNamed(ctx, kadm.NewClient(prod), r.topics, parts, -1); err != nil {
			t.Fatal(err)
		}
		pool, _ := testenv.Database(t)
		rec, err := events.ClaimRecord(&events.ClaimSubmitted{RequestID: uuid.NewString(), UserID: r.user, Username: "alice",
			Canonical: name.Canonical, Key: name.Key, PolicyVersion: username.Latest})
		if err != nil {
			t.Fatal(err)
		}
		rec.Topic, rec.Partition = r.topics.Claims, events.Partition(rec.Key, parts)
		if err := prod.ProduceSync(ctx, rec).FirstErr(); err != nil {
			t.Fatal(err)
		}
		p, err := projector.New(projector.Config{Kafka: opts, Topics: r.topics, Group: r.topics.Claims + "-projector",
			Partitions: parts, SessionTimeout: 6 * time.Second, Logger: log}, pool)
		if err != nil {
			t.Fatal(err)
		}
		pctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- p.Run(pctx) }()
		store := projector.NewStore(pool)
		for {
			h, err := store.Holder(ctx, "alice")
			if err != nil {
				t.Fatal(err)
			}
			if h != nil {
				if h.UserID != r.user {
					t.Errorf("%s: alice is held by %s, want %s", r.topics.Claims, h.UserID, r.user)
				}
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("%s: alice never registered", r.topics.Claims)
			}
			time.Sleep(50 * time.Millisecond)
		}
		stop()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	ends, err := kadm.NewClient(prod).ListEndOffsets(ctx, "a-registrations", "b-registrations", events.TopicRegistrations)
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{"a-registrations", "b-registrations"} {
		var n int64
		ends.Each(func(o kadm.ListedOffset) {
			if o.Topic == topic {
				n += o.Offset
			}
		})
		if n != 1 {
			t.Errorf("%s holds %d decisions, want 1", topic, n)
		}
	}
}
