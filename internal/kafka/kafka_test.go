package kafka

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
)

func admin(t *testing.T) *kadm.Client {
	t.Helper()
	c, err := Embedded("", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestEnsureTopicsCreatesThenKeeps(t *testing.T) {
	t.Parallel()
	adm := admin(t)
	n, err := EnsureTopics(ctx(t), adm, 6, -1)
	if err != nil || n != 6 {
		t.Fatalf("first start: %d partitions, %v", n, err)
	}
	// A later start asking for another count gets the existing topics:
	// the count can never change once names exist.
	n, err = EnsureTopics(ctx(t), adm, 12, -1)
	if err != nil || n != 6 {
		t.Fatalf("second start: %d partitions, %v", n, err)
	}
	rcs, err := adm.DescribeTopicConfigs(ctx(t), events.TopicClaims)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range rcs[0].Configs {
		if want, ok := requiredConfigs[c.Key]; ok && c.MaybeValue() != want {
			t.Errorf("created with %s=%s, want %s", c.Key, c.MaybeValue(), want)
		}
	}
}

func TestEnsureTopicsRefusesUnsafeTopics(t *testing.T) {
	t.Parallel()
	week, compact, forever := "604800000", "compact", "-1"
	cases := map[string]func(adm *kadm.Client) error{
		"finite retention": func(adm *kadm.Client) error {
			_, err := adm.CreateTopic(ctx(t), 3, -1, map[string]*string{"retention.ms": &week}, events.TopicClaims)
			return err
		},
		"compaction": func(adm *kadm.Client) error {
			_, err := adm.CreateTopic(ctx(t), 3, -1, map[string]*string{"cleanup.policy": &compact, "retention.ms": &forever}, events.TopicRegistrations)
			return err
		},
		"partition counts differ": func(adm *kadm.Client) error {
			_, err := adm.CreateTopic(ctx(t), 4, -1, nil, events.TopicRegistrations)
			return err
		},
	}
	for name, setup := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			adm := admin(t)
			if err := setup(adm); err != nil {
				t.Fatal(err)
			}
			_, err := EnsureTopics(ctx(t), adm, 3, -1)
			if !errors.Is(err, ErrTopicLayout) {
				t.Fatalf("got %v, want ErrTopicLayout", err)
			}
			t.Log(err)
		})
	}
}
