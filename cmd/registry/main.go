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
	"io"

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
	"migrate":    runMigrate,
	"rejections": runRejections,
	"rebuild":    runRebuild,
	"replay":     runReplay,
	"policy":     runPolicy,
}

// errUsage is what a command returns after printing its help.
var errUsage = cli.ErrUsage

// run runs the command args names (cli.Run).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return cli.Run(ctx, usage, commands, args, stdout, stderr)
}
