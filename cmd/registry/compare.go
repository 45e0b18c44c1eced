package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/usernameregistry/registry/internal/bench"
)

const compareHelp = `Usage: registry compare --data DIR [flags]

Runs the registry ('registry dev') and the classic design ('registry
baseline') side by side on this machine: for every run, each is started
as a child process on fresh, empty data in DIR, and driven by the same
closed-loop workloads (--clients-list) one after the other, then both by
an open loop at half the registry's peak. It prints every run, then the registry's figures over the
baseline's. The exit status is 1 when a correctness check fails. The
workload flags are those of 'registry bench'; its --url and --clients are
not used here.

Flags:
`

func runCompare(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	var c config
	var cfg bench.CompareConfig
	var f benchFlags
	var clients, env string
	fs := flagSet("compare", &c, stdout)
	declareBench(fs, &cfg.Base, &f)
	fs.StringVar(&cfg.Dir, "data", "", "directory for both systems' data (required; use a fresh one)")
	fs.StringVar(&clients, "clients-list", "1,16,64,256,1024,4096", "closed-loop client counts, comma-separated")
	fs.IntVar(&cfg.Rounds, "rounds", 1, "repeat everything, alternating the systems")
	fs.StringVar(&env, "server-env", "", "environment for both servers, comma-separated NAME=value (e.g. GOMEMLIMIT=280MiB)")
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
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return err
	}
	cfg.Executable, cfg.Logger = exe, log
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
