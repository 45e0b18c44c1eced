package registrations

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/internal/kafka"
	"github.com/usernameregistry/registry/internal/testenv"
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
	unavailable := testenv.OffsetNotAvailable(c, 3)
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
