package testenv

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/kafka"
)

// externalKafka serialises tests on a shared external broker: the topic
// names are fixed by the wire contract, so two tests cannot share one.
var externalKafka sync.Mutex

// Kafka returns seed brokers for a broker that only t uses: an in-process
// kfake, or TEST_KAFKA_BROKERS with the registry's topics deleted first.
func Kafka(t T) []string {
	t.Helper()
	if env := os.Getenv("TEST_KAFKA_BROKERS"); env != "" {
		externalKafka.Lock()
		t.Cleanup(externalKafka.Unlock)
		brokers := kafka.ParseBrokers(env)
		deleteTopics(t, brokers)
		return brokers
	}
	c, err := kafka.Embedded("", 0)
	if err != nil {
		unavailable(t, "embedded Kafka broker: %v", err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

func deleteTopics(t T, brokers []string) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatalf("TEST_KAFKA_BROKERS: %v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := kadm.NewClient(cl).DeleteTopics(ctx, events.TopicClaims, events.TopicRegistrations); err != nil {
		unavailable(t, "Kafka at TEST_KAFKA_BROKERS: %v", err)
	}
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
