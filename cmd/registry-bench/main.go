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
	"io"

	"github.com/usernameregistry/registry/internal/cli"
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

func main() { cli.Main("registry-bench", usage, commands) }

var commands = map[string]cli.Command{
	"bench":           runBench,
	"baseline":        runBaseline,
	"bench-projector": runBenchProjector,
	"compare":         runCompare,
	"generate":        runGenerate,
}

// errUsage is what a command returns after printing its help.
var errUsage = cli.ErrUsage

// run runs the command args names (cli.Run).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return cli.Run(ctx, usage, commands, args, stdout, stderr)
}
