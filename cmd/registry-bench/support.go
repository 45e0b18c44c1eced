package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/term"

	"github.com/usernameregistry/registry/internal/kafka"
	"github.com/usernameregistry/registry/internal/pglaunch"
)

// devDatabase is the database the baseline's private cluster holds, named
// as `registry dev`'s is.
const devDatabase = "registry"

// startDevPostgres starts a durable private cluster under dir and creates
// devDatabase in it, as `registry dev` does.
func startDevPostgres(ctx context.Context, dir string, bins pglaunch.Binaries, log *slog.Logger) (*pglaunch.Cluster, error) {
	if term.IsTerminal(int(os.Stderr.Fd())) {
		bins.Progress = os.Stderr
	}
	cluster, err := pglaunch.Start(ctx, pglaunch.Config{Dir: filepath.Join(dir, "postgres"), Durable: true, Logger: log, Binaries: bins})
	if errors.Is(err, pglaunch.ErrNoBinaries) {
		return nil, fmt.Errorf("starting embedded PostgreSQL: %w", err) // says the ways out itself
	} else if err != nil {
		return nil, fmt.Errorf("starting embedded PostgreSQL (to use an existing server instead, set DATABASE_URL or --database): %w", err)
	}
	if err := createDatabase(ctx, cluster.URL("postgres"), devDatabase); err != nil {
		cluster.Stop() //nolint:errcheck // already failing
		return nil, err
	}
	return cluster, nil
}

func createDatabase(ctx context.Context, url, name string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connecting to embedded PostgreSQL: %w", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return fmt.Errorf("checking for database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("creating database %s: %w", name, err)
	}
	return nil
}

func stopDevPostgres(cluster *pglaunch.Cluster, log *slog.Logger) {
	start := time.Now()
	if err := cluster.Stop(); err != nil {
		log.Error("stopping embedded PostgreSQL", "error", err)
		return
	}
	log.Info("embedded PostgreSQL stopped", "took", time.Since(start).Round(time.Millisecond))
}

func usageWith(fs *flag.FlagSet, help string) func() {
	return func() {
		fmt.Fprint(fs.Output(), help)
		fs.PrintDefaults()
	}
}

// ensureTopics creates the topics if missing and checks them, returning
// their partition count.
func ensureTopics(ctx context.Context, opts []kgo.Opt, c *config) (int32, error) {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	n, err := kafka.EnsureTopics(ctx, kadm.NewClient(cl), int32(c.partitions), int16(c.replication))
	if err != nil {
		return 0, fmt.Errorf("checking topics at %s: %w", c.brokers, err)
	}
	return n, nil
}

// logProgress logs a phase's progress every 10 seconds.
type logProgress struct {
	log   *slog.Logger
	phase string
	total int64
	done  int64
	start time.Time
	last  time.Time
}

func newProgress(log *slog.Logger) *logProgress { return &logProgress{log: log} }

func (l *logProgress) Start(phase string, total int64) {
	l.phase, l.total, l.done, l.start, l.last = phase, total, 0, time.Now(), time.Now()
	l.log.Info(phase, "total", total)
}

func (l *logProgress) Add(n int) {
	l.done += int64(n)
	if time.Since(l.last) >= 10*time.Second {
		l.last = time.Now()
		l.log.Info("progress", "phase", l.phase, "records", l.done, "total", l.total)
	}
}

func (l *logProgress) Finish() {
	l.log.Info("done", "phase", l.phase, "records", l.done, "took", time.Since(l.start).Round(time.Millisecond))
}
