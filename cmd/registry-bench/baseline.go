package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/usernameregistry/registry/internal/cli"

	"golang.org/x/sync/errgroup"

	"github.com/usernameregistry/registry/internal/app/stack"
	"github.com/usernameregistry/registry/internal/pg"
	"github.com/usernameregistry/registry/internal/pglaunch"
	"github.com/usernameregistry/registry/internal/tools/baseline"
)

const baselineHelp = `Usage: registry-bench baseline [flags]

Serves the registry's claim API (POST /v1/claims, GET /v1/usernames/{name})
the classic way, for benchmarks: one PostgreSQL transaction per claim with
UNIQUE constraints, no Kafka. With --naive it checks, then inserts, with no
constraint at all, which grants a name twice under concurrency: that is the
race the registry exists to prevent. Its tables are prefixed baseline_.

Flags:
`

// baselineFlags are the flags of 'registry-bench baseline' besides config's.
type baselineFlags struct {
	naive bool
	reset bool
}

func declareBaseline(fs *flag.FlagSet, c *config, f *baselineFlags) {
	fs.StringVar(&c.databaseURL, "database", os.Getenv("DATABASE_URL"),
		"PostgreSQL URL of an existing server; empty starts a private one in --data (DATABASE_URL)")
	fs.StringVar(&c.httpAddr, "http", "127.0.0.1:8081", "HTTP API listen address")
	fs.StringVar(&c.dataDir, "data", "./.registry-baseline", "directory for the private PostgreSQL's data, when --database is empty")
	fs.BoolVar(&f.naive, "naive", false, "check-then-insert without constraints: races, grants names twice")
	fs.BoolVar(&f.reset, "reset", false, "drop this variant's tables first and start empty")
}

func runBaseline(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	var c config
	var f baselineFlags
	fs := flagSet("baseline", &c, stdout, "db-conns", "postgres")
	declareBaseline(fs, &c, &f)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), baselineHelp)
		fs.PrintDefaults()
	}
	if err := parse(fs, args, &c); err != nil {
		return err
	}
	var cluster *pglaunch.Cluster
	if c.databaseURL == "" {
		var err error
		if cluster, err = startBaselinePostgres(ctx, c.dataDir, c.Postgres, log); err != nil {
			return err
		}
		defer cli.StopDevPostgres(cluster, log)
		c.databaseURL = cluster.URL(cli.DevDatabase)
	}
	return serveBaseline(ctx, &c, baseline.Config{Naive: f.naive, Reset: f.reset, Logger: log}, cluster, stdout)
}

// startBaselinePostgres starts a private cluster the way dev does, in its
// own directory so the baseline's data never mixes with dev's.
func startBaselinePostgres(ctx context.Context, dataDir string, bins pglaunch.Binaries, log *slog.Logger) (*pglaunch.Cluster, error) {
	dir, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating data directory: %w", err)
	}
	return cli.StartDevPostgres(ctx, dir, bins, log)
}

func serveBaseline(ctx context.Context, c *config, cfg baseline.Config, cluster *pglaunch.Cluster, stdout io.Writer) error {
	pool, err := pg.Connect(ctx, c.databaseURL, int32(c.DBConns))
	if err != nil {
		return err
	}
	defer pool.Close()
	cfg.Pool = pool
	h, err := baseline.New(ctx, cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.httpAddr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", c.httpAddr, err)
	}
	cfg.Logger.Info("baseline serving", "variant", cfg.Variant(), "addr", ln.Addr().String(), "db_conns", c.DBConns, "reset", cfg.Reset)
	fmt.Fprintf(stdout, "baseline API listening on http://%s\n", ln.Addr())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return stack.Serve(gctx, ln, h) })
	g.Go(func() error { return watchCluster(gctx, cluster) })
	return g.Wait()
}

// watchCluster fails when the private PostgreSQL dies under the baseline,
// which would otherwise answer 503 to every claim without saying why.
func watchCluster(ctx context.Context, cluster *pglaunch.Cluster) error {
	if cluster == nil {
		return nil
	}
	select {
	case <-cluster.Done():
		return errors.New("the private PostgreSQL server exited unexpectedly; see its log in the data directory")
	case <-ctx.Done():
		return nil
	}
}
