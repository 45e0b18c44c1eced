package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/usernameregistry/registry/internal/cli"

	"github.com/usernameregistry/registry/internal/tools/loadgen"
)

const generateHelp = `Usage: registry-bench generate --claims N [flags]

Writes N realistic claims to the claims topic, for benchmarks and drills:
unique names, popular names claimed many times (taken, and look-alikes:
confusable), retries of recent claims, reused request_ids and a few
unreadable records. The same --seed writes the same claims.

Without --decisions a running projector decides them through the real
pipeline. With --decisions the generator also writes each decision to
registrations, decided by the projector's own code, as if a projector had
run: a registry whose database is empty, ready for registry rebuild. Run no
projector on the topics then.

Creates the topics when they are missing (--partitions, --replication).

Flags:
`

func runGenerate(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	var c config
	var cfg loadgen.GenerateConfig
	def := cfg.WithDefaults()
	fs := flagSet("generate", &c, stdout, "brokers", "partitions", "replication")
	fs.IntVar(&cfg.Claims, "claims", 0, "how many claims records to write (required)")
	fs.BoolVar(&cfg.Decisions, "decisions", false, "also write their decisions to registrations, as a projector would")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed; the same seed writes the same claims")
	fs.Float64Var(&cfg.Hot, "hot", def.Hot, "share of new claims for a popular name")
	fs.IntVar(&cfg.HotNames, "hot-names", def.HotNames, "how many popular names")
	fs.Float64Var(&cfg.Retry, "retry", def.Retry, "share of claims repeating a recent one")
	fs.Usage = cli.UsageWith(fs, generateHelp)
	if err := parse(fs, args, &c); err != nil {
		return err
	}
	if cfg.Claims <= 0 {
		return fmt.Errorf("--claims must be positive, got %d", cfg.Claims)
	}
	opts, err := c.KafkaOptions(log)
	if err != nil {
		return err
	}
	if _, err := c.EnsureTopics(ctx, opts); err != nil {
		return err
	}
	cfg.Kafka, cfg.Progress = opts, cli.NewProgress(log)
	start := time.Now()
	rep, err := loadgen.Generate(ctx, cfg)
	if err != nil {
		return fmt.Errorf("generating: %w", err)
	}
	took := time.Since(start)
	fmt.Fprintf(stdout, "wrote %d claims and %d decisions to %d partitions in %v (%.0f claims/s)\n",
		rep.Claims, rep.Decisions, rep.Partitions, took.Round(time.Millisecond), float64(rep.Claims)/max(took.Seconds(), 1e-9))
	return nil
}
