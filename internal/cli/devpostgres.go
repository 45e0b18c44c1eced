package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/term"

	"github.com/usernameregistry/registry/internal/pglaunch"
)

// DevDatabase is the database `registry dev` (and the baseline's private
// cluster) creates.
const DevDatabase = "registry"

// StartDevPostgres starts the durable private cluster in dir/postgres from
// the server binaries bins picks (downloading the pinned build on a
// machine without any, with a progress bar when stderr is a terminal),
// and creates DevDatabase in it. Stop it with StopDevPostgres.
func StartDevPostgres(ctx context.Context, dir string, bins pglaunch.Binaries, log *slog.Logger) (*pglaunch.Cluster, error) {
	if term.IsTerminal(int(os.Stderr.Fd())) {
		bins.Progress = os.Stderr
	}
	cluster, err := pglaunch.Start(ctx, pglaunch.Config{Dir: filepath.Join(dir, "postgres"), Durable: true, Logger: log, Binaries: bins})
	if errors.Is(err, pglaunch.ErrNoBinaries) {
		return nil, fmt.Errorf("starting embedded PostgreSQL: %w", err) // says the ways out itself
	} else if err != nil {
		return nil, fmt.Errorf("starting embedded PostgreSQL (to use an existing server instead, set DATABASE_URL or --database): %w", err)
	}
	if err := createDatabase(ctx, cluster.URL("postgres"), DevDatabase); err != nil {
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

// StopDevPostgres stops a cluster StartDevPostgres started, logging how
// long it took or why it failed.
func StopDevPostgres(cluster *pglaunch.Cluster, log *slog.Logger) {
	start := time.Now()
	if err := cluster.Stop(); err != nil {
		log.Error("stopping embedded PostgreSQL", "error", err)
		return
	}
	log.Info("embedded PostgreSQL stopped", "took", time.Since(start).Round(time.Millisecond))
}
