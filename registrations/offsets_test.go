package registrations

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/usernameregistry/registry/internal/kafka"
)

// TestReaderWaitsOutOffsetNotAvailable plays a leader election on Apache
// Kafka on kfake: for a moment ListOffsets answers OFFSET_NOT_AVAILABLE
// (KIP-207). The reader must position once it clears, not fail: failing
// ended an API process at start.
func TestReaderWaitsOutOffsetNotAvailable(t *testing.T) {
	t.Parallel()
	c, err := kafka.Embedded("", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	opts := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
	adm, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(adm.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := kafka.EnsureTopics(ctx, kadm.NewClient(adm), 3, -1); err != nil {
		t.Fatal(err)
	}
	var unavailable atomic.Int32
	unavailable.Store(3)
	c.ControlKey(kmsg.ListOffsets.Int16(), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if unavailable.Add(-1) < 0 {
			return nil, nil, false
		}
		req := kreq.(*kmsg.ListOffsetsRequest)
		resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
		resp.SetVersion(req.GetVersion())
		for _, rt := range req.Topics {
			st := kmsg.NewListOffsetsResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewListOffsetsResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.OffsetNotAvailable.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	r, err := NewReader(ReaderConfig{Kafka: opts, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	select {
	case <-r.Positioned():
	case err := <-done:
		t.Fatalf("reader stopped while the end offsets were not available: %v", err)
	case <-ctx.Done():
		t.Fatal("reader never positioned")
	}
	if unavailable.Load() > 0 {
		t.Fatal("ListOffsets never answered OFFSET_NOT_AVAILABLE: the test did not test")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
