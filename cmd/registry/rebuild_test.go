package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/usernameregistry/registry/internal/kafka"
	"github.com/usernameregistry/registry/internal/testenv"
	"github.com/usernameregistry/registry/internal/tools/loadgen"
)

// TestRebuildAndReplayCommands drives the commands as an operator would
// on a registry whose database was lost: generate claims and decisions,
// see verify report the drift (and refuse to swap with it), swap, verify
// again, and audit with replay.
func TestRebuildAndReplayCommands(t *testing.T) {
	t.Parallel()
	brokers, _ := testenv.Topics(t, 3)
	_, dbURL := testenv.Database(t)
	registry := func(args ...string) (string, error) {
		var out, errw bytes.Buffer
		args = append(args, "--brokers", strings.Join(brokers, ","))
		args = append(args, "--database", dbURL)
		err := run(context.Background(), args, &out, &errw)
		return out.String(), err
	}

	// The claims and their decisions, as `registry-bench generate` writes
	// them (that command is a tool, not part of this binary).
	gen, err := loadgen.Generate(context.Background(), loadgen.GenerateConfig{Kafka: kafka.ClientOptions(brokers, testenv.Logger(t)),
		Claims: 2000, Decisions: true, Seed: 7})
	if err != nil || gen.Claims != 2000 || gen.Decisions != 2000 {
		t.Fatalf("generate: %v %+v", err, gen)
	}
	out, err := registry("rebuild", "--verify", "--swap")
	if !errors.Is(err, errDrift) || !strings.Contains(out, "verify: DRIFT") || !strings.Contains(out, "not swapping") {
		t.Fatalf("rebuild --verify --swap on an empty database: %v\n%s", err, out)
	}
	out, err = registry("rebuild", "--swap")
	if err != nil || !strings.Contains(out, "swapped: ") || !strings.Contains(out, "from 2000 registrations records") {
		t.Fatalf("rebuild --swap: %v\n%s", err, out)
	}
	out, err = registry("rebuild", "--verify")
	if err != nil || !strings.Contains(out, "verify: no drift") {
		t.Fatalf("rebuild --verify after the swap: %v\n%s", err, out)
	}
	out, err = registry("replay", "--from", "claims")
	if err != nil || !strings.Contains(out, "replayed 2000 claims") || !strings.Contains(out, "every recorded decision agrees") {
		t.Fatalf("replay: %v\n%s", err, out)
	}
	if _, err := registry("replay", "--from", "registrations"); err == nil {
		t.Fatal("replay --from registrations accepted")
	}
}
