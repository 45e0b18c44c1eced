// Command chaos runs the registry as real processes under load while it
// kills, pauses and cuts them off, then checks every guarantee in
// docs/guarantees.md against what the clients saw and what the topics and
// tables hold. It exits non-zero, printing the seed and the records that
// show it, when any property is broken. `make chaos` runs it.
//
//	chaos [--seed N] [--duration 2m] [--clients 8] [--faults a,b] [--bug fence|ledger|offset]
//	chaos broker --dir D --port P --advertise HOST:PORT   (the broker process a run starts)
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/tools/chaos"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code, err := run(ctx, os.Args[1:], os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
	}
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout io.Writer) (int, error) {
	if len(args) > 0 && args[0] == "broker" {
		return broker(ctx, args[1:])
	}
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	seed := fs.Uint64("seed", envUint("SEED", 1), "seed for the workload and the fault injector (SEED)")
	duration := fs.Duration("duration", envDuration("DURATION", 60*time.Second), "how long load and faults run (DURATION)")
	clients := fs.Int("clients", int(envUint("CLIENTS", 8)), "concurrent clients (CLIENTS)")
	kafka := fs.String("kafka", cmp.Or(os.Getenv("KAFKA"), chaos.KafkaEmbedded), "the broker: kfake (a process behind a proxy) or apache (a three-node Apache Kafka cluster from jars, with broker faults) (KAFKA)")
	faults := fs.String("faults", "", "comma-separated fault types to inject; empty means all: on kfake "+strings.Join(chaos.FaultTypes, ",")+"; on apache "+strings.Join(chaos.ApacheFaultTypes, ","))
	bug := fs.String("bug", "", "build the registry with -tags chaosbug and this deliberate bug: fence, ledger or offset")
	upgrade := fs.Bool("upgrade", os.Getenv("UPGRADE") == "1", "start the registry under username policy version 1 and run registry policy upgrade --to 2 in the middle of the faulted load (UPGRADE=1)")
	dir := fs.String("dir", "", "directory for the run's data and logs; default a new temporary directory, removed after a clean run")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, nil
		}
		return 2, err
	}
	if *bug != "" && !slices.Contains([]string{"fence", "ledger", "offset"}, *bug) {
		return 2, fmt.Errorf("--bug %q: want fence, ledger or offset", *bug)
	}
	keep := *dir != ""
	if !keep {
		d, err := os.MkdirTemp("", "registry-chaos-")
		if err != nil {
			return 1, err
		}
		*dir = d
	}
	cfg := chaos.Config{Seed: *seed, Duration: *duration, Clients: *clients, Kafka: *kafka, Dir: *dir, Log: stdout, Upgrade: *upgrade}
	if *faults != "" {
		cfg.Faults = strings.Split(*faults, ",")
	}
	var err error
	if cfg.Self, err = os.Executable(); err != nil {
		return 1, err
	}
	if cfg.Registry, err = buildRegistry(ctx, *dir, *bug); err != nil {
		return 1, err
	}
	if *bug != "" {
		cfg.Env = []string{"REGISTRY_CHAOS_BUG=" + *bug}
	}
	fmt.Fprintf(stdout, "chaos: seed %d, duration %s, clients %d, kafka %s, bug %q, upgrade %v, data in %s\n", *seed, *duration, *clients, *kafka, *bug, *upgrade, *dir)
	out, err := chaos.Run(ctx, cfg)
	if err != nil {
		return 1, fmt.Errorf("seed %d: %w (data and logs in %s)", *seed, err, *dir)
	}
	return report(stdout, out, *seed, keep), nil
}

// exitAnomalies is the exit status when the checker found anomalies, as
// opposed to 1 when the run itself failed (make chaos-bugs tells them apart).
const exitAnomalies = 3

func report(w io.Writer, out *chaos.Outcome, seed uint64, keep bool) int {
	fmt.Fprintf(w, "\n=== chaos report, seed %d ===\n", seed)
	fmt.Fprint(w, "faults injected:")
	for _, k := range slices.Sorted(maps.Keys(out.Faults)) {
		fmt.Fprintf(w, " %s=%d", k, out.Faults[k])
	}
	fmt.Fprintln(w)
	if out.SettledIn >= 0 {
		fmt.Fprintf(w, "every claim decided %s after healing\n", out.SettledIn.Round(time.Millisecond))
	} else {
		fmt.Fprintln(w, "NOT every claim decided within 30s of healing")
	}
	upgradeFailed := false
	if u := out.Upgrade; u != nil {
		if u.Done() {
			fmt.Fprintf(w, "policy upgrade 1 -> 2: %d attempts, took %s", u.Attempts, u.Ended.Sub(u.Started).Round(time.Millisecond))
		} else {
			upgradeFailed = true
			fmt.Fprintf(w, "policy upgrade 1 -> 2: NOT finished after %d attempts", u.Attempts)
		}
		fmt.Fprintf(w, "; answers 503 policy_upgrading: %d; partitions frozen (frozen -> activated):", u.Retried)
		for _, p := range slices.Sorted(maps.Keys(u.Waits)) {
			fmt.Fprintf(w, " %d=%s", p, u.Waits[p].Round(time.Millisecond))
		}
		fmt.Fprintln(w)
		fmt.Fprintf(w, "shadow follow-ups decided: dropped %d, transferred %d, rejected %d\n",
			u.Shadows[events.OutcomeShadowDropped], u.Shadows[events.OutcomeShadowTransferred], u.Shadows[events.OutcomeRejected])
		for _, f := range u.Failures {
			fmt.Fprintf(w, "  %s\n", f)
		}
	}
	out.Report.Print(w)
	if upgradeFailed {
		fmt.Fprintf(w, "FAIL: the policy upgrade did not finish with seed %d. Data and logs in %s\n", seed, out.Dir)
		return 1
	}
	if len(out.NotInjected) > 0 {
		fmt.Fprintf(w, "NOT every fault type injected (%s): the run was too short; use a longer --duration\n", strings.Join(out.NotInjected, ", "))
	}
	if n := out.Report.Anomalies(); n > 0 || out.SettledIn < 0 {
		fmt.Fprintf(w, "FAIL: %d anomalies with seed %d; rerun with --seed %d. Data and logs in %s\n", n, seed, seed, out.Dir)
		return exitAnomalies
	}
	if len(out.NotInjected) > 0 {
		fmt.Fprintf(w, "FAIL: 0 anomalies with seed %d, but not every fault type was tried. Data and logs in %s\n", seed, out.Dir)
		return 1
	}
	fmt.Fprintf(w, "OK: 0 anomalies with seed %d\n", seed)
	if !keep {
		os.RemoveAll(out.Dir)
	}
	return 0
}

// buildRegistry builds cmd/registry into dir with the failpoints tag (so
// its projectors obey REGISTRY_FAILPOINTS, which the shipped binary
// ignores), and the chaosbug tag too when a bug is asked for. It runs from
// the module root (make runs there).
func buildRegistry(ctx context.Context, dir, bug string) (string, error) {
	bin := filepath.Join(dir, "registry")
	tags := "failpoints"
	if bug != "" {
		tags += ",chaosbug"
	}
	args := []string{"build", "-o", bin, "-tags", tags}
	cmd := exec.CommandContext(ctx, envOr("GO", "go"), append(args, "./cmd/registry")...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building the registry: %w", err)
	}
	return bin, nil
}

func broker(ctx context.Context, args []string) (int, error) {
	fs := flag.NewFlagSet("chaos broker", flag.ContinueOnError)
	dir := fs.String("dir", "", "data directory")
	port := fs.Int("port", 0, "port to listen on at 127.0.0.1")
	adv := fs.String("advertise", "", "address to advertise to clients")
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	if err := chaos.RunBroker(ctx, *dir, *port, *adv); err != nil {
		return 1, err
	}
	return 0, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func envUint(key string, def uint64) uint64 {
	var v uint64
	if _, err := fmt.Sscan(envOr(key, fmt.Sprint(def)), &v); err != nil {
		return def
	}
	return v
}

func envDuration(key string, def time.Duration) time.Duration {
	d, err := time.ParseDuration(envOr(key, def.String()))
	if err != nil {
		return def
	}
	return d
}
