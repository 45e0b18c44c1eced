package projector

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/kafka"
	"github.com/usernameregistry/registry/internal/pg"
)

// Environment of the helper process a failpoint test starts: the test
// binary runs one projector with failpoints set, which must crash.
const (
	helperFailpoints = "PROJECTOR_TEST_FAILPOINTS"
	helperBrokers    = "PROJECTOR_TEST_BROKERS"
	helperDatabase   = "PROJECTOR_TEST_DATABASE"
	helperPartitions = "PROJECTOR_TEST_PARTITIONS"
	helperAdminKeys  = "PROJECTOR_TEST_ADMIN_KEYS" // an admin key file's content; empty: none
)

// crashHelper runs a projector with failpoints and never returns, when
// the test binary was started as a helper; otherwise it does nothing.
func crashHelper() {
	spec := os.Getenv(helperFailpoints)
	if spec == "" {
		return
	}
	err := runHelper(spec)
	fmt.Fprintln(os.Stderr, "helper projector stopped without crashing:", err)
	os.Exit(1)
}

func runHelper(spec string) error {
	hook, err := ParseFailpoints(spec)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pool, err := pg.Connect(ctx, os.Getenv(helperDatabase), 4)
	if err != nil {
		return err
	}
	var parts int32
	fmt.Sscan(os.Getenv(helperPartitions), &parts)
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	var keys *events.AdminKeys
	if k := os.Getenv(helperAdminKeys); k != "" {
		if keys, err = events.ParseAdminKeys(strings.NewReader(k)); err != nil {
			return err
		}
	}
	p, err := New(Config{Kafka: kafka.ClientOptions(strings.Split(os.Getenv(helperBrokers), ","), log), Partitions: parts,
		SessionTimeout: 6 * time.Second, Failpoint: hook, AdminKeys: keys, Logger: log}, pool)
	if err != nil {
		return err
	}
	return p.Run(ctx)
}
