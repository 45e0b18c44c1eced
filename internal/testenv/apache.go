package testenv

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/usernameregistry/registry/internal/kafkalaunch"
)

// apacheKafka is the Apache Kafka broker under TEST_KAFKA=apache: one
// combined broker and controller started from jars (internal/kafkalaunch)
// at first use and shared by the test binary's tests, one at a time.
var apacheKafka apacheBroker

type apacheBroker struct {
	once    sync.Once
	dir     string
	cluster *kafkalaunch.Cluster
	err     error
}

// apacheStartTimeout covers resolving the jars with Maven on first use
// and a cold JVM on a busy machine.
const apacheStartTimeout = 5 * time.Minute

func (b *apacheBroker) start() {
	if b.dir, b.err = os.MkdirTemp("", "registry-test-kafka-"); b.err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), apacheStartTimeout)
	defer cancel()
	b.cluster, b.err = kafkalaunch.Start(ctx, kafkalaunch.Config{
		Dir:    b.dir,
		HeapMB: 384, QuickStart: true,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
}

func (b *apacheBroker) stop() {
	if b.cluster != nil {
		b.cluster.Stop()
	}
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}
