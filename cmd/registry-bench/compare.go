package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/usernameregistry/registry/internal/cli"
	"github.com/usernameregistry/registry/internal/tools/bench"
)

const compareHelp = `Usage: registry-bench compare --data DIR [flags]

Runs the registry ('registry dev') and the classic design ('registry-bench
baseline') side by side on this machine: for every run, each is started
as a child process on fresh, empty data in DIR, and driven by the same
closed-loop workloads (--clients-list) one after the other, then both by
an open loop at half the registry's peak. It prints every run, then the registry's figures over the
baseline's. The exit status is 1 when a correctness check fails. The
workload flags are those of 'registry-bench bench'; its --url and
--clients are not used here. The registry binary is --registry, or, when
that is empty, cmd/registry built with 'go build' into DIR (run from the
module root: go run ./cmd/registry-bench compare ...).

Flags:
`

func runCompare(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	var c config
	var cfg bench.CompareConfig
	var f benchFlags
	var clients, env, registry, systemsList string
	fs := flagSet("compare", &c, stdout)
	declareBench(fs, &cfg.Base, &f)
	fs.StringVar(&cfg.Dir, "data", "", "directory for both systems' data (required; use a fresh one)")
	fs.StringVar(&clients, "clients-list", "1,16,64,256,1024,4096", "closed-loop client counts, comma-separated")
	fs.IntVar(&cfg.Rounds, "rounds", 1, "repeat everything, alternating the systems")
	fs.StringVar(&registry, "registry", "", "the registry binary to run as 'registry dev'; empty builds ./cmd/registry into --data")
	fs.StringVar(&env, "server-env", "", "environment for both servers, comma-separated NAME=value (e.g. GOMEMLIMIT=280MiB)")
	fs.StringVar(&cfg.Kafka, "kafka", bench.KafkaEmbedded, "the registry's broker: embedded (dev's own) or apache (a single Apache Kafka broker from jars, fresh for every run, given to dev as --kafka-brokers; needs java 17+ and mvn)")
	fs.StringVar(&systemsList, "systems", "registry,baseline", "systems to run, comma-separated: registry, baseline")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), compareHelp)
		fs.PrintDefaults()
	}
	if err := parse(fs, args, &c); err != nil {
		return err
	}
	if cfg.Dir == "" || cfg.Rounds < 1 || cfg.Base.Duration <= 0 {
		return fmt.Errorf("--data is required, --rounds must be at least 1 and --duration above 0")
	}
	for _, s := range strings.Split(clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("--clients-list: %q is not a client count", s)
		}
		cfg.Clients = append(cfg.Clients, n)
	}
	if env != "" {
		cfg.Env = strings.Split(env, ",")
	}
	for _, s := range strings.Split(systemsList, ",") {
		cfg.Systems = append(cfg.Systems, strings.TrimSpace(s))
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return err
	}
	if registry == "" {
		if registry, err = buildRegistry(ctx, cfg.Dir); err != nil {
			return err
		}
	}
	cfg.Registry, cfg.Baseline, cfg.Logger = registry, exe, log
	res, err := bench.Compare(ctx, cfg)
	if res != nil {
		if f.json {
			if jerr := json.NewEncoder(stdout).Encode(res); jerr != nil {
				return jerr
			}
		} else if werr := res.WriteText(stdout); werr != nil {
			return werr
		}
	}
	if err != nil {
		return fmt.Errorf("compare: %w", err)
	}
	return nil
}

// buildRegistry builds cmd/registry (the product, as `make build` does)
// into dir, from the module the working directory is in.
func buildRegistry(ctx context.Context, dir string) (string, error) {
	bin, err := filepath.Abs(filepath.Join(dir, "registry"))
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, goCommand(), "build", "-o", bin, "github.com/usernameregistry/registry/cmd/registry")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building the registry (or pass --registry): %w", err)
	}
	return bin, nil
}

// goCommand is the go command to build with: $GO, or go on the PATH.
func goCommand() string {
	var env cli.Env
	return env.Or("GO", "go")
}
