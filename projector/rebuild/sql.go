package rebuild

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/usernameregistry/registry/internal/pg"
	"github.com/usernameregistry/registry/projector/migrations"
)

// Schemas the commands build in. Each run drops and recreates its own, so
// a run that was interrupted leaves nothing a rerun has to clean up.
const (
	// ShadowSchema holds the projection `registry rebuild` builds from the
	// registrations topic, until --swap moves it live.
	ShadowSchema = "registry_shadow"
	// ReplaySchema holds the projection `registry replay` decides from the
	// claims topic; it is never swapped in.
	ReplaySchema = "registry_replay"
	// OldSchemaPrefix names the schema a swap moves the replaced live
	// tables into, followed by the swap's Unix time.
	OldSchemaPrefix = "registry_old_"
)

// rebuildLock is the advisory lock key that keeps two rebuilds or replays
// (or a rebuild and a swap) from working on one database at once.
const rebuildLock = 0x72656275 // "rebu"

// The bookkeeping tables' columns, in the order the loaders send them (the
// projection's are projection.RequestColumns and HolderColumns).
var (
	conflictCols = []string{"claim_partition", "claim_offset", "request_id", "decision"}
	copyCols     = []string{"claim_partition", "claim_offset", "decision"}
)

func ident(schema, table string) pgx.Identifier { return pgx.Identifier{schema, table} }

func q(schema string) string { return pgx.Identifier{schema}.Sanitize() }

// createSchema drops schema and creates it afresh: the projection's tables
// by running the projection's own migrations (ms) in it, so they have
// the live tables' columns, defaults, constraints and indexes; then the
// bookkeeping tables of a build.
func createSchema(ctx context.Context, pool *pgxpool.Pool, schema string, ms []pg.Migration) error {
	s := q(schema)
	if _, err := pool.Exec(ctx, `DROP SCHEMA IF EXISTS `+s+` CASCADE`); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, `CREATE SCHEMA `+s); err != nil {
		return err
	}
	if err := pg.MigrateInto(ctx, pool, schema, ms); err != nil {
		return err
	}
	for _, stmt := range []string{
		// request_conflict decisions: published, never in the ledger, but
		// they advance their partition and copies of them are checked.
		`CREATE TABLE ` + s + `.conflicts (claim_partition integer NOT NULL, claim_offset bigint NOT NULL, request_id uuid NOT NULL, decision bytea NOT NULL)`,
		`CREATE INDEX conflicts_position ON ` + s + `.conflicts (claim_partition, claim_offset)`,
		// copies: records naming a position already loaded; checked against
		// the first after the load.
		`CREATE TABLE ` + s + `.copies (claim_partition integer NOT NULL, claim_offset bigint NOT NULL, decision bytea NOT NULL)`,
		// the registrations end offsets the build read up to.
		`CREATE TABLE ` + s + `.source_ends (partition integer PRIMARY KEY, end_offset bigint NOT NULL)`,
		// one row once the build finished and passed its checks.
		`CREATE TABLE ` + s + `.complete (finished_at timestamptz NOT NULL DEFAULT now())`,
	} {
		if _, err := pool.Exec(ctx, stmt); err != nil {
			return err
		}
	}
	return nil
}

// deferredIndex is an index (or the unique or primary key constraint an
// index enforces) of a projection table, dropped before a bulk load and
// built again after it: loading into unindexed tables and sorting once
// is several times faster than keeping the indexes up to date row by row.
// Its definition is read from the catalog of the tables the migrations
// just built, never written by hand, so whatever a migration declares
// comes back.
type deferredIndex struct {
	table      string
	name       string
	constraint bool     // an ALTER TABLE ... ADD CONSTRAINT, else a CREATE INDEX
	def        string   // pg_get_constraintdef, or pg_get_indexdef (schema-qualified)
	unique     bool     // refuses duplicates, so a failure is explained by listing them
	columns    []string // the indexed columns, to list duplicates; empty for expressions
}

// sqlDeferrable lists the indexes of schema's tables named in $2 with what
// builds them again: for an index that enforces a primary key, unique or
// exclusion constraint, the constraint's definition; for another index,
// its CREATE INDEX. (A foreign key would hold on to the index it
// references, and the drop would then fail loudly; the projection has
// none.)
const sqlDeferrable = `
SELECT t.relname, i.relname, c.oid IS NOT NULL,
       coalesce(pg_get_constraintdef(c.oid), pg_get_indexdef(x.indexrelid)),
       x.indisunique,
       coalesce((SELECT array_agg(a.attname ORDER BY k.n) FROM unnest(x.indkey) WITH ORDINALITY AS k(attnum, n)
                 JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum), '{}')
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.contype IN ('p', 'u', 'x') AND c.conrelid = t.oid
WHERE n.nspname = $1 AND t.relname = ANY($2::text[])
ORDER BY t.relname, i.relname`

// deferIndexes drops the indexes of schema's projection tables and returns
// what builds them again (see deferredIndex).
func deferIndexes(ctx context.Context, pool *pgxpool.Pool, schema string) ([]deferredIndex, error) {
	rows, err := pool.Query(ctx, sqlDeferrable, schema, migrations.Projection)
	if err != nil {
		return nil, fmt.Errorf("reading the indexes of schema %s: %w", schema, err)
	}
	ixs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (deferredIndex, error) {
		var d deferredIndex
		err := r.Scan(&d.table, &d.name, &d.constraint, &d.def, &d.unique, &d.columns)
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading the indexes of schema %s: %w", schema, err)
	}
	for _, d := range ixs {
		drop := `DROP INDEX ` + q(schema) + `.` + pgx.Identifier{d.name}.Sanitize()
		if d.constraint {
			drop = `ALTER TABLE ` + ident(schema, d.table).Sanitize() + ` DROP CONSTRAINT ` + pgx.Identifier{d.name}.Sanitize()
		}
		if _, err := pool.Exec(ctx, drop); err != nil {
			return nil, fmt.Errorf("deferring index %s of %s.%s: %w", d.name, schema, d.table, err)
		}
	}
	return ixs, nil
}

// build returns the statement that builds d again in schema.
func (d deferredIndex) build(schema string) string {
	if d.constraint {
		return `ALTER TABLE ` + ident(schema, d.table).Sanitize() + ` ADD CONSTRAINT ` + pgx.Identifier{d.name}.Sanitize() + ` ` + d.def
	}
	return d.def
}

// duplicatesSQL lists values held twice where d wants one, for the error
// that explains a failed index build; "" when d has no plain columns.
func (d deferredIndex) duplicatesSQL(schema string) string {
	if !d.unique || len(d.columns) == 0 {
		return ""
	}
	cols := make([]string, len(d.columns))
	for i, c := range d.columns {
		cols[i] = pgx.Identifier{c}.Sanitize()
	}
	list := strings.Join(cols, ", ")
	return `SELECT concat_ws(' / ', ` + list + `), count(*) FROM ` + ident(schema, d.table).Sanitize() +
		` GROUP BY ` + list + ` HAVING count(*) > 1 ORDER BY 1 LIMIT $1`
}

// contradictingCopiesSQL finds copies whose bytes differ from the first
// decision recorded at their position (or that name a position with no
// decision at all).
func contradictingCopiesSQL(schema string) string {
	s := q(schema)
	return fmt.Sprintf(`
SELECT c.claim_partition, c.claim_offset, count(*) OVER ()
FROM %[1]s.copies c
LEFT JOIN %[1]s.requests r ON r.claim_partition = c.claim_partition AND r.claim_offset = c.claim_offset
LEFT JOIN %[1]s.conflicts x ON x.claim_partition = c.claim_partition AND x.claim_offset = c.claim_offset
WHERE coalesce(r.decision, x.decision) IS DISTINCT FROM c.decision
ORDER BY 1, 2 LIMIT $1`, s)
}
