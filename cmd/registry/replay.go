package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/usernameregistry/registry/internal/cli"

	"github.com/usernameregistry/registry/projector/rebuild"
)

const replayHelp = `Usage: registry replay --from claims [flags]

The determinism audit. Decides every claim in the claims topic again, in
log order per partition, with the projector's own decision code under the
username policy version the database records, into the scratch schema
registry_replay, and compares each decision with the one recorded in
registrations. Exits 1 when a recorded decision differs from the replayed
one or is missing.

Claims made under another policy version are refused, unless
--policy-version names a version to replay under: claims made under another
version are then decided as if made under it, from the name as typed, and
the report lists the names whose holder would change.

Flags:
`

// errDiverged makes the command exit 1 after printing the divergences.
var errDiverged = errors.New("recorded decisions differ from the replayed ones (see above)")

func runReplay(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	boundMemory()
	var c config
	var from string
	var samples, policy, workers int
	fs := flagSet("replay", &c, stdout, "brokers", "database", "admin-key")
	fs.StringVar(&from, "from", "claims", "the topic to replay; only claims (registry rebuild reads registrations)")
	fs.IntVar(&policy, "policy-version", 0, "replay every claim under this username policy version (claims made under another one as if made under it); report the names that would change")
	fs.IntVar(&samples, "samples", 10, "how many examples of each kind of divergence to print")
	fs.IntVar(&workers, "workers", 2, "partitions replayed at once")
	fs.Usage = cli.UsageWith(fs, replayHelp)
	if err := parse(fs, args, &c); err != nil {
		return err
	}
	if from != "claims" {
		return fmt.Errorf("--from %q: only --from claims can be replayed (registry rebuild rebuilds from registrations)", from)
	}
	cfg, pool, err := rebuildConfig(ctx, &c, samples, log)
	if err != nil {
		return err
	}
	defer pool.Close()
	rep, err := rebuild.Replay(ctx, rebuild.ReplayConfig{Config: cfg, PolicyVersion: policy, Workers: workers})
	if err != nil {
		return fmt.Errorf("replaying: %w", err)
	}
	printReplay(stdout, rep)
	if rep.Diverged() {
		return errDiverged
	}
	return nil
}

func printReplay(w io.Writer, r *rebuild.ReplayReport) {
	rate := float64(r.Claims) / max(r.Elapsed.Seconds(), 1e-9)
	fmt.Fprintf(w, "replayed %d claims under policy version %d into %s in %v (%.0f claims/s)\n",
		r.Claims, r.PolicyVersion, rebuild.ReplaySchema, r.Elapsed.Round(time.Millisecond), rate)
	for _, v := range slices.Sorted(maps.Keys(r.ClaimVersions)) {
		fmt.Fprintf(w, "  claims made under policy version %d: %d\n", v, r.ClaimVersions[v])
	}
	fmt.Fprintf(w, "  decisions %d, copies %d; registrations records %d: matching %d, matching copies %d, not compared (claims after the start) %d\n",
		r.Decided, r.Copies, r.Recorded, r.Matched, r.RecordedCopies, r.NotCompared)
	fmt.Fprintf(w, "  decided but not yet in registrations (end of a partition) %d\n", r.Pending)
	for _, d := range []rebuild.Diff{r.Divergent, r.Missing, r.Unreadable, r.NamesChanged} {
		fmt.Fprintf(w, "  %s: %d\n", d.Kind, d.Count)
		printSamples(w, "", d.Samples)
	}
	if r.Diverged() {
		fmt.Fprintln(w, "replay: DIVERGED")
	} else {
		fmt.Fprintln(w, "replay: every recorded decision agrees")
	}
}
