package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/usernameregistry/registry/internal/tools/bench"
)

const benchHelp = `Usage: registry-bench bench [flags]

Sends claims to a claim API (the registry's, or 'registry-bench baseline') and
reports throughput, latency percentiles, answers by status and reason, and
errors by type. Then it checks every answer: no name (or look-alike) was
granted to two holders, and no request_id got two different decisions.
The exit status is 1 when the check fails.

Closed loop by default (--clients); --rate switches to an open loop whose
latencies count from when each claim was due, so queueing shows.

Flags:
`

// benchFlags are the flags of 'registry-bench bench' that are not bench.Config's.
type benchFlags struct {
	json             bool
	expectDuplicates bool
}

func declareBench(fs *flag.FlagSet, cfg *bench.Config, f *benchFlags) {
	def := bench.Config{}.WithDefaults()
	fs.StringVar(&cfg.URL, "url", def.URL, "base `URL` of the claim API")
	// The token is read from the environment only: a flag would show it in ps.
	cfg.Token = os.Getenv("REGISTRY_BENCH_TOKEN")
	fs.IntVar(&cfg.Clients, "clients", def.Clients, "closed loop: concurrent clients, each waiting for its answer before the next claim")
	fs.Float64Var(&cfg.Rate, "rate", 0, "open loop: claims per second, sent on schedule whatever the answers (0: closed loop)")
	fs.DurationVar(&cfg.Duration, "duration", def.Duration, "measured part of the run")
	fs.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "warm-up before the measured part; checked, not counted")
	fs.Float64Var(&cfg.Hot, "hot", 0.2, "share of new claims that go to a few hot names, so they collide")
	fs.IntVar(&cfg.HotNames, "hot-names", def.HotNames, "number of hot names")
	fs.Float64Var(&cfg.Retry, "retry", 0.1, "share of claims that repeat a recent claim's request_id and payload")
	fs.DurationVar(&cfg.Wait, "wait", def.Wait, "the ?wait= sent with each claim")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "workload seed; 0 picks one (the report shows it). The same seed against the same\ndata resends the same request_ids, which the server answers from its ledger")
	fs.IntVar(&cfg.MaxOutstanding, "max-outstanding", def.MaxOutstanding, "open loop: unanswered claims allowed; more are not sent and count as not_sent errors")
	fs.IntVar(&cfg.Conns, "conns", 0, "HTTP connections to the server (0: --clients in a closed loop, 1024 in an open loop)")
	fs.BoolVar(&cfg.H2C, "h2c", false, "send over cleartext HTTP/2, multiplexing claims on few connections (the registry serves it; the baseline does not)")
	fs.BoolVar(&f.json, "json", false, "print the report as one JSON object")
	fs.BoolVar(&f.expectDuplicates, "expect-duplicates", false, "names granted twice do not fail the check (for 'registry-bench baseline --naive')")
}

func runBench(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	var c config
	var cfg bench.Config
	var f benchFlags
	fs := flagSet("bench", &c, stdout)
	declareBench(fs, &cfg, &f)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), benchHelp)
		fs.PrintDefaults()
	}
	if err := parse(fs, args, &c); err != nil {
		return err
	}
	// bench.Config reads zero as "the default"; on the command line a
	// zero is a mistake.
	if cfg.Duration <= 0 || cfg.Clients < 1 {
		return fmt.Errorf("--duration must be above 0 and --clients at least 1, got %s and %d", cfg.Duration, cfg.Clients)
	}
	cfg.Logger = log
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if err := writeReport(stdout, rep, f.json); err != nil {
		return err
	}
	if !rep.Check.OK(f.expectDuplicates) {
		return fmt.Errorf("correctness check failed: %d names granted twice, %d request_ids answered inconsistently",
			rep.Check.DuplicateGrants, rep.Check.Inconsistent)
	}
	return nil
}

func writeReport(w io.Writer, rep *bench.Report, asJSON bool) error {
	var err error
	if asJSON {
		err = rep.WriteJSON(w)
	} else {
		err = rep.WriteText(w)
	}
	if err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	return nil
}
