package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/usernameregistry/registry/internal/kafkalaunch"
)

// CompareConfig configures a side-by-side run: the registry (`registry
// dev`, from the Registry binary) and the classic design (`registry-bench
// baseline`, from the Baseline binary), each started fresh as a child
// process, driven by the same workloads one after the other.
type CompareConfig struct {
	// Registry is the registry binary (cmd/registry). Required.
	Registry string
	// Baseline is the binary whose baseline command serves the classic
	// design (cmd/registry-bench). Required.
	Baseline string
	// Dir holds each run's data and server log, in a subdirectory per
	// system, round and workload. Required; it should be empty.
	Dir string
	// Clients are the closed-loop client counts. Defaults to 1, 16, 64,
	// 256, 1024 and 4096.
	Clients []int
	// Rounds repeats everything, alternating the systems, so that drift in
	// the machine's load shows as spread rather than as a difference.
	// Defaults to 1.
	Rounds int
	// Base is the workload and timing of every run (URL, Clients and Rate
	// are set per run). Seeds are Base.Seed plus the run's number, the
	// same for both systems.
	Base Config
	// Env is added to the environment of both servers (GOMEMLIMIT, say).
	Env []string
	// Kafka is the registry's broker: KafkaEmbedded (the default), the
	// broker embedded in `registry dev`, fsync on every write; or
	// KafkaApache, a single Apache Kafka broker from jars
	// (internal/kafkalaunch, Kafka's default settings) started fresh for
	// every registry run and given to dev as --kafka-brokers. The broker's
	// JVM is not a child of dev, so its CPU is not in CompareRun.CPU.
	Kafka string
	// Systems are the systems to run, of "registry" and "baseline".
	// Defaults to both.
	Systems []string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// CompareRun is one workload against one system.
type CompareRun struct {
	System   string  `json:"system"` // "registry" or "baseline"
	Round    int     `json:"round"`
	Workload string  `json:"workload"` // "closed-64", "open-1200", ...
	CPU      float64 `json:"cpu_seconds"`
	Report   *Report `json:"report"`
}

// Comparison is what a side-by-side run measured.
type Comparison struct {
	Runs []CompareRun `json:"runs"`
	// HalfPeak is the open-loop rate both systems were driven at: half
	// the registry's best closed-loop throughput in the first round.
	HalfPeak float64 `json:"half_peak_rate"`
}

var systems = []string{"registry", "baseline"}

// The brokers the registry can run on (CompareConfig.Kafka).
const (
	KafkaEmbedded = "embedded"
	KafkaApache   = "apache"
)

// Compare runs every closed-loop workload against each system, then an
// open loop at half the registry's peak against each, each run on a
// freshly started server with empty data, and returns every report. A failed correctness check is returned as an error after the
// run, with the reports.
func Compare(ctx context.Context, cfg CompareConfig) (*Comparison, error) {
	if cfg.Registry == "" || cfg.Baseline == "" || cfg.Dir == "" {
		return nil, errors.New("bench: CompareConfig needs Registry, Baseline and Dir")
	}
	if len(cfg.Clients) == 0 {
		cfg.Clients = []int{1, 16, 64, 256, 1024, 4096}
	}
	cfg.Rounds = cmp.Or(cfg.Rounds, 1)
	cfg.Kafka = cmp.Or(cfg.Kafka, KafkaEmbedded)
	if cfg.Kafka != KafkaEmbedded && cfg.Kafka != KafkaApache {
		return nil, fmt.Errorf("bench: Kafka %q: want %s or %s", cfg.Kafka, KafkaEmbedded, KafkaApache)
	}
	if len(cfg.Systems) == 0 {
		cfg.Systems = systems
	}
	for _, sys := range cfg.Systems {
		if !slices.Contains(systems, sys) {
			return nil, fmt.Errorf("bench: system %q: want registry or baseline", sys)
		}
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	out := &Comparison{}
	seed := cmp.Or(cfg.Base.Seed, uint64(time.Now().UnixNano()))
	var checkErrs []error
	// Every workload gets its own seed, the same for both systems, so no
	// run resends another's request_ids (which would be answered from the
	// ledger).
	seeds := map[string]uint64{}
	seedFor := func(round int, name string) uint64 {
		key := fmt.Sprintf("%d/%s", round, name)
		if _, ok := seeds[key]; !ok {
			seeds[key] = seed + uint64(len(seeds))
		}
		return seeds[key]
	}
	run := func(sys string, round int, workloads []Config) error {
		for _, w := range workloads {
			name := fmt.Sprintf("closed-%d", w.Clients)
			if w.Rate > 0 {
				name = fmt.Sprintf("open-%.0f", w.Rate)
			}
			// A fresh server and fresh data for every run, so no run
			// inherits what an earlier one left behind.
			srv, err := startServer(ctx, cfg, sys, fmt.Sprintf("%s-%d-%s", sys, round, name))
			if err != nil {
				return err
			}
			w.URL, w.Seed, w.Logger = srv.url, seedFor(round, name), cfg.Logger
			before := srv.cpu()
			rep, err := Run(ctx, w)
			cpu := srv.cpu() - before
			srv.stop(cfg.Logger)
			if err != nil {
				return fmt.Errorf("%s: %w", sys, err)
			}
			out.Runs = append(out.Runs, CompareRun{System: sys, Round: round, Workload: name, CPU: cpu, Report: rep})
			if !rep.Check.OK(false) {
				checkErrs = append(checkErrs, fmt.Errorf("%s %s: %d names granted twice, %d request_ids answered inconsistently",
					sys, name, rep.Check.DuplicateGrants, rep.Check.Inconsistent))
			}
			cfg.Logger.Info("compare", "system", sys, "round", round, "workload", name, "throughput", rep.Throughput, "p50_ms", rep.Latency.P50, "p99_ms", rep.Latency.P99)
		}
		return nil
	}
	for round := 1; round <= cfg.Rounds; round++ {
		var closed []Config
		for _, n := range cfg.Clients {
			w := cfg.Base
			w.Clients, w.Rate = n, 0
			closed = append(closed, w)
		}
		for _, sys := range cfg.Systems {
			if err := run(sys, round, closed); err != nil {
				return out, err
			}
		}
		if round == 1 {
			for _, r := range out.Runs {
				if r.System == "registry" {
					out.HalfPeak = max(out.HalfPeak, r.Report.Throughput/2)
				}
			}
		}
		open := cfg.Base
		open.Rate = max(1, float64(int(out.HalfPeak)))
		for _, sys := range cfg.Systems {
			if err := run(sys, round, []Config{open}); err != nil {
				return out, err
			}
		}
	}
	return out, errors.Join(checkErrs...)
}

// server is a system under test, running as a child process.
type server struct {
	cmd    *exec.Cmd
	url    string
	exited chan struct{}        // closed when the process has exited
	broker *kafkalaunch.Cluster // the registry's Apache Kafka, if any
}

func startServer(ctx context.Context, cfg CompareConfig, sys, run string) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	dir := filepath.Join(cfg.Dir, run)
	exe, args := cfg.Registry, []string{"dev", "--data", dir, "--http", addr}
	if sys == "baseline" {
		exe, args = cfg.Baseline, []string{"baseline", "--data", dir, "--reset", "--http", addr}
	}
	var broker *kafkalaunch.Cluster
	if sys == "registry" && cfg.Kafka == KafkaApache {
		kctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		broker, err = kafkalaunch.Start(kctx, kafkalaunch.Config{Dir: dir + "-kafka", Logger: cfg.Logger})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("starting Apache Kafka for %s: %w", run, err)
		}
		args = append(args, "--kafka-brokers", strings.Join(broker.Addrs(), ","))
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), cfg.Env...)
	logf, err := os.Create(dir + ".log")
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own descriptor
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		if broker != nil {
			broker.Stop()
		}
		return nil, fmt.Errorf("starting %s: %w", sys, err)
	}
	s := &server{cmd: cmd, url: "http://" + addr, exited: make(chan struct{}), broker: broker}
	go func() {
		cmd.Wait() //nolint:errcheck // its log says why
		close(s.exited)
	}()
	if err := s.waitReady(ctx, 60*time.Second); err != nil {
		s.stop(cfg.Logger)
		return nil, fmt.Errorf("%s did not get ready: %w; the end of %s.log:\n%s", sys, err, dir, tail(dir+".log", 2000))
	}
	return s, nil
}

func (s *server) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		resp, err := http.Get(s.url + "/readyz")
		if err == nil {
			io.Copy(io.Discard, resp.Body) //nolint:errcheck // only the status matters
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("/readyz not 200 after %s: %v", limit, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.exited:
			return fmt.Errorf("it exited: %v", s.cmd.ProcessState)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop interrupts the server and waits for it (and its PostgreSQL) to
// exit.
func (s *server) stop(log *slog.Logger) {
	s.cmd.Process.Signal(syscall.SIGINT) //nolint:errcheck // it may have exited
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		log.Warn("server did not stop; killing it", "pid", s.cmd.Process.Pid)
		s.cmd.Process.Kill() //nolint:errcheck // best effort
		<-s.exited
	}
	if s.broker != nil {
		s.broker.Stop()
	}
}

// cpu is the CPU time, in seconds, used so far by the server and every
// live process under it (its PostgreSQL). Linux only; elsewhere 0.
func (s *server) cpu() float64 {
	var ticks int64
	var walk func(pid int)
	walk = func(pid int) {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			// Fields after the command name, which is in parentheses.
			if i := strings.LastIndexByte(string(b), ')'); i > 0 {
				f := strings.Fields(string(b)[i+1:])
				if len(f) > 12 {
					u, _ := strconv.ParseInt(f[11], 10, 64)
					st, _ := strconv.ParseInt(f[12], 10, 64)
					ticks += u + st
				}
			}
		}
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
		for _, t := range tasks {
			b, _ := os.ReadFile(t)
			for _, c := range strings.Fields(string(b)) {
				if n, err := strconv.Atoi(c); err == nil {
					walk(n)
				}
			}
		}
	}
	walk(s.cmd.Process.Pid)
	return float64(ticks) / 100 // USER_HZ
}

// tail returns the last n bytes of a file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return string(b[max(0, len(b)-n):])
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// WriteText prints one line per run and, per workload, the registry's
// figures over the baseline's (medians over rounds).
func (c *Comparison) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%-9s %-5s %-12s %12s %9s %9s %9s %8s %s\n", "system", "round", "workload", "answers/s", "p50 ms", "p99 ms", "p99.9 ms", "cpu s", "check")
	for _, r := range c.Runs {
		check := "ok"
		if !r.Report.Check.OK(false) {
			check = "FAILED"
		}
		fmt.Fprintf(&b, "%-9s %-5d %-12s %12.0f %9.2f %9.2f %9.2f %8.2f %s\n", r.System, r.Round, r.Workload,
			r.Report.Throughput, r.Report.Latency.P50, r.Report.Latency.P99, r.Report.Latency.P999, r.CPU, check)
	}
	ran := func(sys string) bool {
		return slices.ContainsFunc(c.Runs, func(r CompareRun) bool { return r.System == sys })
	}
	if !ran("registry") || !ran("baseline") { // one system (--systems): nothing to divide
		_, err := io.WriteString(w, b.String())
		return err
	}
	fmt.Fprintf(&b, "\nregistry / baseline (medians over rounds); open loop at half the registry's peak: %.0f/s\n", c.HalfPeak)
	fmt.Fprintf(&b, "%-12s %12s %12s %10s %10s\n", "workload", "throughput", "p50", "p99", "cpu/claim")
	var workloads []string
	for _, r := range c.Runs {
		if !slices.Contains(workloads, r.Workload) {
			workloads = append(workloads, r.Workload)
		}
	}
	for _, wl := range workloads {
		reg, base := c.medians("registry", wl), c.medians("baseline", wl)
		fmt.Fprintf(&b, "%-12s %11.2fx %11.2fx %9.2fx %9.2fx\n", wl, ratio(reg.tput, base.tput), ratio(reg.p50, base.p50),
			ratio(reg.p99, base.p99), ratio(reg.cpuPerClaim, base.cpuPerClaim))
	}
	best := func(sys string) float64 {
		var m float64
		for _, r := range c.Runs {
			if r.System == sys && strings.HasPrefix(r.Workload, "closed-") {
				m = max(m, r.Report.Throughput)
			}
		}
		return m
	}
	fmt.Fprintf(&b, "peak: registry %.0f/s, baseline %.0f/s, ratio %.2fx\n", best("registry"), best("baseline"), ratio(best("registry"), best("baseline")))
	_, err := io.WriteString(w, b.String())
	return err
}

type figures struct{ tput, p50, p99, cpuPerClaim float64 }

func (c *Comparison) medians(sys, workload string) figures {
	var t, p50, p99, cpu []float64
	for _, r := range c.Runs {
		if r.System != sys || r.Workload != workload {
			continue
		}
		t, p50, p99 = append(t, r.Report.Throughput), append(p50, r.Report.Latency.P50), append(p99, r.Report.Latency.P99)
		if r.Report.Answers > 0 {
			cpu = append(cpu, r.CPU/float64(r.Report.Answers))
		}
	}
	return figures{median(t), median(p50), median(p99), median(cpu)}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	return xs[len(xs)/2]
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
