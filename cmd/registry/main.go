// Command registry runs the username registry. One binary, thin:
// subcommands parse flags and environment into config and wire the
// packages together (see internal/app/stack).
//
//	registry dev       everything embedded: broker, PostgreSQL, projector, API
//	registry serve     the HTTP API only
//	registry project   the projector only
//	registry migrate   apply database migrations
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

const usage = `registry: an event-sourced username registry on Kafka and PostgreSQL

Usage:
  registry dev      [flags]   run everything embedded (broker, PostgreSQL, projector, API)
  registry serve    [flags]   run the HTTP API against REGISTRY_KAFKA_BROKERS and DATABASE_URL
  registry project  [flags]   run a projector against REGISTRY_KAFKA_BROKERS and DATABASE_URL
  registry migrate  [flags]   apply database migrations to DATABASE_URL
  registry rejections [flags] print claim rejections as they are decided (needs only REGISTRY_KAFKA_BROKERS)
  registry rebuild  [flags]   rebuild the projection from registrations into a shadow schema; --verify, --swap
  registry replay --from claims [flags]  decide every claim again and compare with registrations (determinism audit)

Run 'registry <command> -h' for a command's flags. The measurement tools
(bench, baseline, compare, bench-projector, generate) are a separate
command: go run ./cmd/registry-bench -h.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "registry:", err)
		os.Exit(1)
	}
}

var commands = map[string]func(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error{
	"dev":        runDev,
	"serve":      runServe,
	"project":    runProject,
	"migrate":    runMigrate,
	"rejections": runRejections,
	"rebuild":    runRebuild,
	"replay":     runReplay,
	"policy":     runPolicy,
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
