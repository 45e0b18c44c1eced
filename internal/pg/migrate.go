package pg

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.up.sql
var migrationFiles embed.FS

// migrationLock is the advisory lock key that serialises concurrent
// migrators (several processes starting at once against one database).
const migrationLock = 0x72656769 // "regi"

// Migration is one numbered schema change.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations lists the embedded migrations in version order.
func Migrations() ([]Migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.up.sql")
	if err != nil {
		return nil, err
	}
	var ms []Migration
	for _, n := range names {
		m, err := readMigration(n)
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	return ms, nil
}

func readMigration(name string) (Migration, error) {
	base := strings.TrimSuffix(path.Base(name), ".up.sql")
	num, label, ok := strings.Cut(base, "_")
	v, err := strconv.Atoi(num)
	if !ok || err != nil {
		return Migration{}, fmt.Errorf("migration file %s is not named NNN_name.up.sql", name)
	}
	body, err := migrationFiles.ReadFile(name)
	if err != nil {
		return Migration{}, err
	}
	return Migration{Version: v, Name: label, SQL: string(body)}, nil
}

// Migrate applies every embedded migration not yet recorded in
// schema_migrations, each in its own transaction, and returns the versions
// it applied. Concurrent callers wait on an advisory lock, so exactly one
// applies each migration.
func Migrate(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) ([]int, error) {
	ms, err := Migrations()
	if err != nil {
		return nil, fmt.Errorf("reading embedded migrations: %w", err)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquiring a connection to migrate: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrationLock); err != nil {
		return nil, fmt.Errorf("taking the migration lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, migrationLock) //nolint:errcheck // the lock also ends with the session
	return applyPending(ctx, conn.Conn(), ms, log)
}

func applyPending(ctx context.Context, conn *pgx.Conn, ms []Migration, log *slog.Logger) ([]int, error) {
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    integer     PRIMARY KEY,
		name       text        NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return nil, fmt.Errorf("creating schema_migrations: %w", err)
	}
	var applied []int
	for _, m := range ms {
		done, err := apply(ctx, conn, m)
		if err != nil {
			return applied, fmt.Errorf("applying migration %03d_%s: %w", m.Version, m.Name, err)
		}
		if done {
			log.Info("applied migration", "version", m.Version, "name", m.Name)
			applied = append(applied, m.Version)
		}
	}
	return applied, nil
}

// apply runs m unless it is already recorded; it reports whether it ran.
func apply(ctx context.Context, conn *pgx.Conn, m Migration) (bool, error) {
	ran := false
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2) ON CONFLICT DO NOTHING`, m.Version, m.Name)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		ran = true
		_, err = tx.Exec(ctx, m.SQL)
		return err
	})
	return ran, err
}
