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

	"github.com/usernameregistry/registry/internal/cli"
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
  registry policy diff --to N [--json]    what moving to username policy version N would change (exit 1: holders collide)
  registry policy upgrade --to N          move the running registry to username policy version N through the log

Run 'registry <command> -h' for a command's flags. The measurement tools
(bench, baseline, compare, bench-projector, generate) are a separate
command: go run ./cmd/registry-bench -h.
`

func main() { cli.Main("registry", usage, commands) }

var commands = map[string]cli.Command{
	"dev":        runDev,
	"serve":      runServe,
	"project":    runProject,
	"migrate":    oneShot(runMigrate),
	"rejections": runRejections,
	"rebuild":    oneShot(runRebuild),
	"replay":     oneShot(runReplay),
	"policy":     oneShot(runPolicy),
}

// errStopped is the error of a one-shot command stopped by SIGINT or
// SIGTERM before it finished.
var errStopped = errors.New("interrupted before it finished")

// oneShot marks a command that runs to completion (migrate, rebuild,
// replay, policy) rather than until stopped: interrupted, it fails (exit
// 1) instead of counting as a server's clean stop, so that a script never
// takes an interrupted `rebuild --verify` for "no drift". Its error says
// so and does not wrap context.Canceled, which cli.Run would take for a
// clean stop.
func oneShot(cmd cli.Command) cli.Command {
	return func(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
		err := cmd(ctx, args, stdout, log)
		if err != nil && ctx.Err() != nil && !errors.Is(err, errUsage) && !errors.Is(err, errInterrupted) {
			return fmt.Errorf("%w (%v)", errStopped, err)
		}
		return err
	}
}

// errUsage is what a command returns after printing its help.
var errUsage = cli.ErrUsage

// run runs the command args names (cli.Run).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return cli.Run(ctx, usage, commands, args, stdout, stderr)
}
