// Package migrations is the projection's schema, and its only home: the
// numbered NNN_name.up.sql files here create every table the projector
// writes. `registry migrate` applies them to the live database, and
// `registry rebuild` runs the very same files into its shadow schema, so a
// rebuilt projection has the live one's columns, constraints and indexes
// by construction. A new column or constraint is a new file here (the next
// number), never an edit of an applied one: applied migrations are
// recorded by version and not run again.
//
// The runner (version table, advisory lock) is internal/pg's; this
// package owns the statements, as river's driver owns its migrations.
package migrations

import (
	"context"
	"embed"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/usernameregistry/registry/internal/pg"
)

//go:embed *.up.sql
var files embed.FS

// Projection lists the tables derived from the decisions alone: rebuild
// fills them from the registrations topic and swap replaces the live ones
// with them. The other tables hold the projectors' positions and epochs
// (claim_partitions), the topics' recorded shape (topic_layout) and the
// outbox; a swap keeps those, except claim_partitions' policy state
// (policy_version, frozen_to, staged), which follows from the decisions
// and is taken from the rebuild.
var Projection = []string{"usernames", "requests", "holds", "reservations", "rename_locks", "carried"}

// All returns the projection's migrations in version order.
func All() []pg.Migration {
	ms, err := pg.ReadMigrations(files)
	if err != nil {
		panic(fmt.Sprintf("projector/migrations: embedded migrations: %v", err)) // a build with misnamed files; TestMigrationsRead catches it
	}
	return ms
}

// Migrate applies the migrations not yet applied to the database behind
// pool (see pg.Migrate) and returns the versions it applied.
func Migrate(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) ([]int, error) {
	return pg.Migrate(ctx, pool, All(), log)
}
