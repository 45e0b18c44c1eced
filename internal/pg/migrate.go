package pg

import (
	"context"
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

// migrationLock is the advisory lock key that serialises concurrent
// migrators (several processes starting at once against one database).
const migrationLock = 0x72656769 // "regi"

// Migration is one numbered schema change.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// ReadMigrations reads the files named NNN_name.up.sql at the root of fsys
// (an embed.FS, in practice, owned by the package whose tables they
// create) and returns them in version order. Two files with one version,
// or a file named otherwise, are an error.
func ReadMigrations(fsys fs.FS) ([]Migration, error) {
	names, err := fs.Glob(fsys, "*.up.sql")
	if err != nil {
		return nil, err
	}
	var ms []Migration
	for _, n := range names {
		m, err := readMigration(fsys, n)
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i := 1; i < len(ms); i++ {
		if ms[i].Version == ms[i-1].Version {
			return nil, fmt.Errorf("migrations %03d_%s and %03d_%s share a version", ms[i-1].Version, ms[i-1].Name, ms[i].Version, ms[i].Name)
		}
	}
	return ms, nil
}

func readMigration(fsys fs.FS, name string) (Migration, error) {
	base := strings.TrimSuffix(path.Base(name), ".up.sql")
	num, label, ok := strings.Cut(base, "_")
	v, err := strconv.Atoi(num)
	if !ok || err != nil {
		return Migration{}, fmt.Errorf("migration file %s is not named NNN_name.up.sql", name)
	}
	body, err := fs.ReadFile(fsys, name)
	if err != nil {
		return Migration{}, err
	}
	return Migration{Version: v, Name: label, SQL: string(body)}, nil
}

// Migrate applies every migration of ms not yet recorded in
// schema_migrations, each in its own transaction, and returns the versions
// it applied. Concurrent callers wait on an advisory lock, so exactly one
// applies each migration. Migrations are recorded by version only: a
// recorded one is never run again, whatever its text says now.
func Migrate(ctx context.Context, pool *pgxpool.Pool, ms []Migration, log *slog.Logger) ([]int, error) {
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

// MigrateInto runs every migration of ms, in order and in one transaction,
// inside schema, which must exist and be empty: the tables they create are
// created there (search_path names schema alone), and nothing is recorded
// in schema_migrations. It builds a copy of the schema beside the live one,
// such as the shadow a rebuild fills, from the very statements that built
// the live tables. Migrations must therefore not qualify table names.
func MigrateInto(ctx context.Context, pool *pgxpool.Pool, schema string, ms []Migration) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('search_path', $1, true)`, pgx.Identifier{schema}.Sanitize()); err != nil {
			return fmt.Errorf("setting search_path to %s: %w", schema, err)
		}
		for _, m := range ms {
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("applying migration %03d_%s in schema %s: %w", m.Version, m.Name, schema, err)
			}
		}
		return nil
	})
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
