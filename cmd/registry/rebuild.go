package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/usernameregistry/registry/internal/cli"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/usernameregistry/registry/internal/pg"
	"github.com/usernameregistry/registry/projector/migrations"
	"github.com/usernameregistry/registry/projector/rebuild"
)

const rebuildHelp = `Usage: registry rebuild [flags]

Rebuilds the PostgreSQL projection (usernames, request ledger, per-partition
progress) from the registrations topic into the schema registry_shadow,
without touching the live tables. It reads every partition from offset 0 to
the end offsets captured at start, bulk-loads with COPY, builds the indexes
after the load and checks that no name or key has two holders.

  --verify  compare the shadow with the live projection and print the
            differences; exit 1 on drift
  --swap    atomically replace the live usernames and requests tables with
            the shadow's, fencing the running projectors (see
            docs/operations.md); with --verify, only when there is no drift

Ctrl-C leaves the live projection untouched; a rerun starts clean.

Flags:
`

// errDrift makes the command exit 1 after printing the differences.
var errDrift = errors.New("the shadow and the live projection differ (see above)")

func runRebuild(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	boundMemory()
	var c config
	var verify, swap bool
	var samples int
	fs := flagSet("rebuild", &c, stdout, "brokers", "database")
	fs.BoolVar(&verify, "verify", false, "compare the shadow with the live projection; exit 1 on drift")
	fs.BoolVar(&swap, "swap", false, "atomically replace the live projection with the shadow")
	fs.IntVar(&samples, "samples", 10, "how many examples of each kind of difference or problem to print")
	fs.Usage = cli.UsageWith(fs, rebuildHelp)
	if err := parse(fs, args, &c); err != nil {
		return err
	}
	cfg, pool, err := rebuildConfig(ctx, &c, samples, log)
	if err != nil {
		return err
	}
	defer pool.Close()
	rep, err := rebuild.Build(ctx, cfg)
	if err != nil {
		return fmt.Errorf("rebuilding: %w", err)
	}
	printBuild(stdout, rep)
	if verify {
		v, err := rebuild.Verify(ctx, cfg)
		if err != nil {
			return fmt.Errorf("verifying: %w", err)
		}
		printVerify(stdout, v)
		if v.Drift() {
			if swap {
				fmt.Fprintln(stdout, "not swapping: run with --swap alone to replace the live projection anyway")
			}
			return errDrift
		}
	}
	if !swap {
		return nil
	}
	s, err := rebuild.Swap(ctx, cfg)
	if err != nil {
		return fmt.Errorf("swapping: %w", err)
	}
	printSwap(stdout, s)
	return nil
}

// rebuildConfig connects to the database (migrating it, so a lost
// database gets its tables back) and returns the rebuild configuration.
func rebuildConfig(ctx context.Context, c *config, samples int, log *slog.Logger) (rebuild.Config, *pgxpool.Pool, error) {
	opts, err := c.KafkaOptions(log)
	if err != nil {
		return rebuild.Config{}, nil, err
	}
	pool, err := pg.Connect(ctx, c.databaseURL, 8)
	if err != nil {
		return rebuild.Config{}, nil, err
	}
	if _, err := migrations.Migrate(ctx, pool, log); err != nil {
		pool.Close()
		return rebuild.Config{}, nil, err
	}
	keys, err := c.auth.loadAdminKeys()
	if err != nil {
		pool.Close()
		return rebuild.Config{}, nil, err
	}
	return rebuild.Config{Kafka: opts, Pool: pool, Samples: samples, AdminKeys: keys, Progress: cli.NewProgress(log), Logger: log}, pool, nil
}

// memoryLimit is the Go heap's soft limit for rebuild and replay: their
// live data is bounded (fetch buffers, COPY batches, one partition's
// replay state), but by default the heap may grow to twice the live data
// between collections. GOMEMLIMIT overrides it.
const memoryLimit = 200 << 20

func boundMemory() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
}

func printBuild(w io.Writer, r *rebuild.BuildReport) {
	rate := float64(r.Records) / max(r.Elapsed.Seconds(), 1e-9)
	fmt.Fprintf(w, "rebuilt %s from %d registrations records in %v (%.0f records/s)\n", rebuild.ShadowSchema, r.Records, r.Elapsed.Round(time.Millisecond), rate)
	fmt.Fprintf(w, "  decisions %d: ledger rows %d, holders %d, not stored (request_conflict, policy_upgrading) %d\n", r.Decisions, r.Ledger, r.Holders, r.Conflicts)
	fmt.Fprintf(w, "  copies skipped %d, contradicting copies %d, unreadable records %d\n", r.Copies, r.Contradicting, r.Unreadable)
	printSamples(w, "unreadable", r.UnreadableSamples)
	printSamples(w, "contradicting copy at claims", r.ContradictingSamples)
	var parts []string
	for p := range r.Partitions {
		parts = append(parts, fmt.Sprintf("%d:%d", p, r.Next[p]))
	}
	fmt.Fprintf(w, "  next offsets (partition:offset) %s\n", strings.Join(parts, " "))
}

func printVerify(w io.Writer, v *rebuild.VerifyReport) {
	fmt.Fprintf(w, "verify: usernames live %d, shadow %d; requests live %d, shadow %d; live rows decided after the rebuild, not compared: %d\n",
		v.LiveUsernames, v.ShadowUsernames, v.LiveRequests, v.ShadowRequests, v.NotCompared)
	for _, d := range v.Diffs {
		fmt.Fprintf(w, "  %-22s %d\n", d.Kind, d.Count)
		printSamples(w, "  ", d.Samples)
	}
	for _, p := range v.Positions {
		state := "live ahead (decided after the rebuild)"
		if p.Shadow > p.Live {
			state = "live BEHIND the topics"
		}
		fmt.Fprintf(w, "  partition %d: next offset live %d, shadow %d: %s\n", p.Partition, p.Live, p.Shadow, state)
	}
	if v.Drift() {
		fmt.Fprintln(w, "verify: DRIFT")
	} else {
		fmt.Fprintln(w, "verify: no drift")
	}
}

func printSwap(w io.Writer, s *rebuild.SwapReport) {
	fmt.Fprintf(w, "swapped: the live usernames and requests are now the rebuilt ones; the replaced tables are in schema %s (drop it when satisfied)\n", s.OldSchema)
	fmt.Fprintf(w, "  caught up %d decisions from registrations and %d from the outbox; waited %v for the projectors, held them %v\n",
		s.CaughtUp, s.FromOutbox, s.LockWait.Round(time.Millisecond), s.Held.Round(time.Millisecond))
	for _, p := range s.Partitions {
		fmt.Fprintf(w, "  partition %d: next offset %d (live was %d, shadow %d), owner epoch %d\n", p.Partition, p.Final, p.Live, p.Shadow, p.Epoch)
	}
}

func printSamples(w io.Writer, label string, samples []string) {
	for _, s := range samples {
		fmt.Fprintf(w, "    %s %s\n", strings.TrimSpace(label), s)
	}
}
