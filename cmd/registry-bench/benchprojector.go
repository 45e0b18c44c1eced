package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/usernameregistry/registry/internal/pprofsrv"

	"github.com/usernameregistry/registry/internal/tools/bench"
)

const benchProjectorHelp = `Usage: registry-bench bench-projector --data DIR [flags]

Measures the projector alone. It starts a fresh embedded broker and a
durable PostgreSQL in DIR (as 'registry dev' does), fills the claims topic
with --claims claims from the load generator's workload, then starts
--projectors projectors and times them deciding every claim into
PostgreSQL and publishing the decisions. --prefill registers that many
names first, to measure against a large projection. DIR must not exist
or be empty; delete it afterwards.

Flags:
`

func runBenchProjector(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	var c config
	var cfg bench.DrainConfig
	var asJSON bool
	fs := flagSet("bench-projector", &c, stdout, "partitions", "pprof")
	fs.StringVar(&cfg.Dir, "data", "", "fresh directory for the run's broker and PostgreSQL data (required)")
	fs.IntVar(&cfg.Claims, "claims", 1000000, "claims to fill the topic with")
	fs.IntVar(&cfg.Projectors, "projectors", 1, "projectors in the group (in this process)")
	fs.IntVar(&cfg.Prefill, "prefill", 0, "names registered before the drain")
	fs.Float64Var(&cfg.Hot, "hot", 0.2, "share of new claims that go to a few hot names")
	fs.IntVar(&cfg.HotNames, "hot-names", 100, "number of hot names")
	fs.Float64Var(&cfg.Retry, "retry", 0.1, "share of claims that repeat a recent claim's request_id and payload")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "workload seed; 0 picks one")
	fs.BoolVar(&asJSON, "json", false, "print the report as one JSON object")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), benchProjectorHelp)
		fs.PrintDefaults()
	}
	if err := parse(fs, args, &c); err != nil {
		return err
	}
	if cfg.Dir == "" || cfg.Claims < 1 || cfg.Projectors < 1 || cfg.Prefill < 0 {
		return fmt.Errorf("--data is required, and --claims and --projectors must be at least 1")
	}
	if err := pprofsrv.Serve(ctx, c.PprofAddr, stdout); err != nil {
		return err
	}
	cfg.Partitions = int32(c.Partitions)
	cfg.Logger = log
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return err
	}
	rep, err := bench.Drain(ctx, cfg)
	if err != nil {
		return fmt.Errorf("bench-projector: %w", err)
	}
	if asJSON {
		return json.NewEncoder(stdout).Encode(rep)
	}
	fmt.Fprintf(stdout, "%d claims over %d partitions, %d projector(s), %d names registered before\n", rep.Claims, rep.Partitions, rep.Projectors, rep.Prefill)
	fmt.Fprintf(stdout, "fill %.1fs; drain %.2fs: %.0f claims/s decided into PostgreSQL\n", rep.FillSeconds, rep.DrainSeconds, rep.ClaimsPerSecond)
	fmt.Fprintf(stdout, "ledger rows %d, names registered %d, seed %d\n", rep.LedgerRows, rep.Registered, rep.Seed)
	return nil
}
