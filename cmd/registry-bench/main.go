// Command registry-bench holds the tools that measure the registry and are
// not part of it: the HTTP load generator (bench), the classic design it is
// measured against (baseline, including the deliberately racy --naive),
// the side-by-side comparison (compare), the projector drain
// (bench-projector) and the claims generator (generate). The registry
// binary and its Docker image carry none of them.
//
//	go run ./cmd/registry-bench compare --data /tmp/cmp --rounds 1 --duration 5s --warmup 1s
//
// Environment variables are read here only, as in cmd/registry.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

const usage = `Usage: registry-bench <command> [flags]

Tools that measure the registry (not part of the product; the registry
binary is cmd/registry).

Commands:
  bench            load-generate against an HTTP API and check every answer
  baseline         the classic design (one transaction per claim) with the same HTTP API
  compare          run 'registry dev' and 'registry-bench baseline' side by side under the same workloads
  bench-projector  time projectors draining a filled claims topic
  generate         write realistic claims (and decisions) to the topics

Run 'registry-bench <command> -h' for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "registry-bench:", err)
		os.Exit(1)
	}
}

var commands = map[string]func(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error{
	"bench":           runBench,
	"baseline":        runBaseline,
	"bench-projector": runBenchProjector,
	"compare":         runCompare,
	"generate":        runGenerate,
}

var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		return nil
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
	log, err := newLogger(stderr)
	if err != nil {
		return err
	}
	err = cmd(ctx, args[1:], stdout, log)
	switch {
	case errors.Is(err, errUsage):
		return nil // the flag package already printed the help
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		return nil // interrupted while starting or stopping: a clean stop
	}
	return err
}

func newLogger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(envOr("REGISTRY_LOG_LEVEL", "info"))); err != nil {
		return nil, fmt.Errorf("REGISTRY_LOG_LEVEL: %w", err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})), nil
}
