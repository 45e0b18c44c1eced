package kafka

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

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
	week, compact, forever, yes, two := "604800000", "compact", "-1", "true", "2"
	cases := map[string]func(adm *kadm.Client) error{
		"unclean leader election": func(adm *kadm.Client) error {
			_, err := adm.CreateTopic(ctx(t), 3, -1, map[string]*string{"unclean.leader.election.enable": &yes, "retention.ms": &forever}, events.TopicClaims)
			return err
		},
		"min.insync.replicas above the replicas": func(adm *kadm.Client) error {
			_, err := adm.CreateTopic(ctx(t), 3, 1, map[string]*string{"min.insync.replicas": &two, "retention.ms": &forever}, events.TopicClaims)
			return err
		},
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

// TestEnsureTopicsRefusesFewerReplicasThanAsked: topics that already exist
// with fewer replicas than the registry was configured with are refused,
// not silently used.
func TestEnsureTopicsRefusesFewerReplicasThanAsked(t *testing.T) {
	t.Parallel()
	adm := admin(t)
	if _, err := EnsureTopics(ctx(t), adm, 3, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureTopics(ctx(t), adm, 3, 3); !errors.Is(err, ErrTopicLayout) {
		t.Fatalf("topics with 1 replica, asked for 3: got %v, want ErrTopicLayout", err)
	}
}

// TestEnsureTopicsWaitsForKRaftPropagation plays Apache Kafka in KRaft
// mode on kfake: right after CreateTopics, Metadata and DescribeConfigs
// answer UNKNOWN_TOPIC_OR_PARTITION for a moment. EnsureTopics must wait
// for the topics, not report them missing.
func TestEnsureTopicsWaitsForKRaftPropagation(t *testing.T) {
	t.Parallel()
	c, err := Embedded("", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	var unknownMeta, unknownConfigs atomic.Int32
	unknownMeta.Store(2)
	unknownConfigs.Store(2)
	c.ControlKey(kmsg.Metadata.Int16(), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kreq.(*kmsg.MetadataRequest)
		if len(req.Topics) == 0 || unknownMeta.Add(-1) < 0 {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.MetadataResponse)
		resp.SetVersion(req.GetVersion())
		host, port := splitHostPort(t, c.ListenAddrs()[0])
		resp.Brokers = []kmsg.MetadataResponseBroker{{NodeID: c.CurrentNode(), Host: host, Port: port}}
		resp.ControllerID = c.CurrentNode()
		for _, rt := range req.Topics {
			t := kmsg.NewMetadataResponseTopic()
			t.Topic = rt.Topic
			t.ErrorCode = kerr.UnknownTopicOrPartition.Code
			resp.Topics = append(resp.Topics, t)
		}
		return resp, nil, true
	})
	c.ControlKey(kmsg.DescribeConfigs.Int16(), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if unknownMeta.Load() > 0 || unknownConfigs.Add(-1) < 0 {
			return nil, nil, false
		}
		req := kreq.(*kmsg.DescribeConfigsRequest)
		resp := req.ResponseKind().(*kmsg.DescribeConfigsResponse)
		resp.SetVersion(req.GetVersion())
		for _, r := range req.Resources {
			rr := kmsg.NewDescribeConfigsResponseResource()
			rr.ResourceType, rr.ResourceName = r.ResourceType, r.ResourceName
			rr.ErrorCode = kerr.UnknownTopicOrPartition.Code
			resp.Resources = append(resp.Resources, rr)
		}
		return resp, nil, true
	})
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.MetadataMinAge(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	n, err := EnsureTopics(ctx(t), kadm.NewClient(cl), 4, -1)
	if err != nil || n != 4 {
		t.Fatalf("EnsureTopics while the topics propagate: %d partitions, %v", n, err)
	}
	if unknownConfigs.Load() > 0 {
		t.Fatal("DescribeConfigs never answered unknown: the test did not test")
	}
}

func splitHostPort(t *testing.T, addr string) (string, int32) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return host, int32(p)
}

// TestRecordsAreGzip: the registry's clients write gzip batches, the codec
// every mainstream client (KafkaJS included) reads without extra packages.
func TestRecordsAreGzip(t *testing.T) {
	t.Parallel()
	c, err := Embedded("", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(append(ClientOptions(c.ListenAddrs(), slog.New(slog.DiscardHandler)),
		kgo.DefaultProduceTopic(events.TopicClaims), kgo.ConsumeTopics(events.TopicClaims))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	if _, err := EnsureTopics(ctx(t), kadm.NewClient(cl), 1, -1); err != nil {
		t.Fatal(err)
	}
	value := []byte(strings.Repeat(`{"username":"alice"}`, 20)) // compressible: Kafka clients skip compressing what does not shrink
	if err := cl.ProduceSync(ctx(t), &kgo.Record{Value: value}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	fs := cl.PollFetches(ctx(t))
	if err := fs.Err0(); err != nil {
		t.Fatal(err)
	}
	recs := fs.Records()
	if len(recs) != 1 {
		t.Fatalf("fetched %d records, want 1", len(recs))
	}
	if got := recs[0].Attrs.CompressionType(); got != 1 {
		t.Fatalf("batch compression type %d, want 1 (gzip)", got)
	}
}
