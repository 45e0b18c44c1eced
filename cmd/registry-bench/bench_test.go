package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/usernameregistry/registry/internal/testenv"
	"github.com/usernameregistry/registry/internal/tools/bench"
)

// runAsRegistry makes the test binary act as the registry-bench binary,
// for tests that start it as a child process (compare starts its
// baseline).
const runAsRegistry = "REGISTRY_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runAsRegistry) == "1" {
		main()
		os.Exit(0)
	}
	testenv.Main(m)
}

// TestCompareSmoke runs `registry-bench compare` for a moment: the registry
// (dev, everything embedded) and the baseline each start as a child
// process, answer the same workloads, and pass the correctness check. No
// figure is asserted; docs/benchmarks.md has the real runs.
func TestCompareSmoke(t *testing.T) {
	t.Parallel()
	res, err := bench.Compare(context.Background(), bench.CompareConfig{
		Registry: registryBinary(t), Baseline: os.Args[0], Env: []string{runAsRegistry + "=1"}, Dir: filepath.Join(searchableTempDir(t), "compare"), Clients: []int{4},
		Base:   bench.Config{Duration: time.Second, Warmup: 200 * time.Millisecond, Hot: 0.2, HotNames: 10, Retry: 0.1, Wait: 5 * time.Second},
		Logger: testenv.Logger(t),
	})
	if err != nil {
		t.Fatalf("compare: %v", err)
	}
	seen := map[string]int{}
	for _, r := range res.Runs {
		seen[r.System+" "+r.Workload[:strings.IndexByte(r.Workload, '-')]]++
		if r.Report.Answers == 0 || r.Report.Check.Granted == 0 || !r.Report.Check.OK(false) {
			t.Errorf("%s %s: %d answers, check %+v", r.System, r.Workload, r.Report.Answers, r.Report.Check)
		}
	}
	for _, want := range []string{"registry closed", "baseline closed", "registry open", "baseline open"} {
		if seen[want] != 1 {
			t.Errorf("%d %s runs, want 1 (runs: %v)", seen[want], want, seen)
		}
	}
	var out strings.Builder
	if err := res.WriteText(&out); err != nil || !strings.Contains(out.String(), "peak: registry") {
		t.Errorf("text report: %v\n%s", err, out.String())
	}
}

// TestBenchAgainstBaseline is a smoke test of both tools together: a short
// closed-loop run against each baseline variant completes with answers,
// and against the safe variant the correctness check holds. Whether the
// naive variant races in two seconds is up to the scheduler, so nothing is
// asserted about its duplicates.
func TestBenchAgainstBaseline(t *testing.T) {
	t.Parallel()
	_, dbURL := testenv.Database(t)
	for _, naive := range []bool{false, true} {
		api := startBaseline(t, dbURL, naive)
		args := []string{"--url", api, "--duration", "2s", "--warmup", "200ms", "--clients", "8", "--hot-names", "10", "--json"}
		if naive {
			args = append(args, "--expect-duplicates")
		}
		rep, err := benchReport(t, args...)
		t.Logf("naive=%v: %d answers %v, check %+v", naive, rep.Answers, rep.ByAnswer, rep.Check)
		switch {
		case rep.Answers == 0 || rep.Check.Requests == 0:
			t.Errorf("naive=%v: no answers: %+v", naive, rep)
		case naive && err != nil && !strings.Contains(err.Error(), "correctness check failed"):
			t.Errorf("naive: bench failed: %v", err)
		case !naive && (err != nil || !rep.Check.OK(false) || rep.Check.Granted == 0):
			t.Errorf("safe: bench returned %v, check %+v", err, rep.Check)
		}
	}
}

// startBaseline runs `registry-bench baseline` in process on a free port until
// the test ends and returns its URL.
func startBaseline(t *testing.T, dbURL string, naive bool) string {
	t.Helper()
	args := []string{"--database", dbURL, "--http", "127.0.0.1:0", "--db-conns", "8"}
	if naive {
		args = append(args, "--naive")
	}
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- runBaseline(ctx, args, pw, testenv.Logger(t))
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		cancel()
		t.Fatalf("baseline printed no address: %v (baseline: %v)", err, <-done)
	}
	go io.Copy(io.Discard, pr) //nolint:errcheck // drain
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("baseline stopped with: %v", err)
		}
	})
	return strings.TrimSpace(strings.TrimPrefix(line, "baseline API listening on "))
}

// benchReport runs `registry-bench bench --json ...` and decodes its report,
// which is printed whether or not the check held.
func benchReport(t *testing.T, args ...string) (bench.Report, error) {
	t.Helper()
	var out bytes.Buffer
	err := runBench(context.Background(), args, &out, testenv.Logger(t))
	var rep bench.Report
	if jerr := json.Unmarshal(out.Bytes(), &rep); jerr != nil {
		t.Fatalf("bench %v printed no JSON report (%v): %v %q", args, err, jerr, out.String())
	}
	return rep, err
}

func TestBenchFlagErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"bench", "--hot", "1.5"}, "hot share must be between 0 and 1"},
		{[]string{"bench", "--retry", "1"}, "retry share at least 0 and below 1"},
		{[]string{"bench", "--url", "localhost:8080"}, "is not an http:// or https:// URL"},
		{[]string{"bench", "--duration", "0s"}, "--duration must be above 0"},
		{[]string{"bench", "--clients", "0"}, "--clients at least 1"},
		{[]string{"baseline", "extra"}, `unexpected argument "extra"`},
	}
	for _, c := range cases {
		err := run(context.Background(), c.args, &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("registry %s: error %v, want one containing %q", strings.Join(c.args, " "), err, c.want)
		}
	}
}

// TestBenchProjectorSmoke drains a small claims topic into a projection
// that already holds names: every claim is decided (one ledger row per
// distinct request_id), and the prefilled names do not get in the way.
func TestBenchProjectorSmoke(t *testing.T) {
	t.Parallel()
	rep, err := bench.Drain(context.Background(), bench.DrainConfig{
		Dir: filepath.Join(searchableTempDir(t), "drain"), Claims: 2000, Partitions: 3, Prefill: 500,
		Hot: 0.2, HotNames: 10, Retry: 0.1, Seed: 7, Logger: testenv.Logger(t),
	})
	if err != nil {
		t.Fatalf("drain: %v", err)
	}
	// A tenth of the claims repeat a recent request_id, so the ledger has
	// fewer rows than there were claims, but most of them.
	if rep.LedgerRows < 1500 || rep.LedgerRows > 2000 || rep.Registered < 1000 || rep.ClaimsPerSecond <= 0 {
		t.Errorf("drain report %+v", rep)
	}
}

// registryBinary builds cmd/registry for tests that run it as a child
// process (compare runs 'registry dev').
func registryBinary(t *testing.T) string {
	t.Helper()
	bin, err := buildRegistry(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// searchableTempDir is a temp dir the postgres account can reach when
// the test runs as root (t.TempDir is private to its owner).
func searchableTempDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "registry-bench-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
