package rebuild_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/usernameregistry/registry/internal/pg"
	"github.com/usernameregistry/registry/internal/testenv"
	"github.com/usernameregistry/registry/projector/migrations"
	"github.com/usernameregistry/registry/projector/rebuild"
)

// catalog describes the projection tables of schema as PostgreSQL's
// catalog has them: every column (type, NOT NULL, default), every
// constraint (its definition) and every index (its definition, with the
// schema's name taken out so two schemas compare equal).
func (e *env) catalog(schema string) []string {
	e.t.Helper()
	const sql = `
SELECT format('column %s.%s %s%s default %s', c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
              CASE WHEN a.attnotnull THEN ' not null' ELSE '' END, coalesce(pg_get_expr(d.adbin, d.adrelid), 'none'))
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = $1 AND c.relname = ANY($2::text[]) AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT format('constraint %s.%s %s', c.relname, k.conname, pg_get_constraintdef(k.oid))
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = ANY($2::text[])
UNION ALL
SELECT format('index %s.%s %s', c.relname, i.relname, replace(pg_get_indexdef(x.indexrelid), quote_ident($1) || '.', ''))
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = ANY($2::text[])`
	rows, err := e.pool.Query(context.Background(), sql, schema, migrations.Projection)
	if err != nil {
		e.t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		e.t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// testOnlyMigration is a migration the product does not have, standing for
// the next one a developer writes: a CHECK constraint, a UNIQUE constraint
// and a plain index on the projection's tables.
var testOnlyMigration = pg.Migration{Version: 9001, Name: "test_only", SQL: `
ALTER TABLE usernames ADD CONSTRAINT usernames_username_not_empty CHECK (username <> '');
ALTER TABLE usernames ADD CONSTRAINT usernames_holder_claim UNIQUE (claim_partition, claim_offset);
CREATE INDEX requests_by_user ON requests (user_id);`}

// TestRebuildKeepsTheSchema: with a further migration applied to the live
// database, the shadow a build makes has the live projection tables'
// columns, constraints and indexes exactly (it runs the same migrations),
// and after `rebuild --swap` the live tables still have the further
// migration's constraints, which still refuse what they refuse.
func TestRebuildKeepsTheSchema(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ms := append(migrations.All(), testOnlyMigration)
	if _, err := pg.Migrate(context.Background(), e.pool, ms, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	live := e.catalog("public")
	for _, want := range []string{"usernames_username_not_empty", "usernames_holder_claim", "requests_by_user", "usernames_key_ordinary", "usernames_no_ordinary_beside_group", "requests_claim_position"} {
		if !slices.ContainsFunc(live, func(s string) bool { return strings.Contains(s, want) }) {
			t.Fatalf("live catalog lacks %s: %q", want, live)
		}
	}
	stop := e.projector()
	e.generate(300, false)
	e.awaitDecided()
	stop()

	cfg := e.config()
	cfg.Migrations = ms
	if _, err := rebuild.Build(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if got := e.catalog(rebuild.ShadowSchema); !slices.Equal(got, live) {
		t.Errorf("shadow catalog differs from live:\n got %q\nwant %q", got, live)
	}
	if _, err := rebuild.Swap(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if got := e.catalog("public"); !slices.Equal(got, live) {
		t.Errorf("live catalog after the swap differs from before:\n got %q\nwant %q", got, live)
	}
	_, err := e.pool.Exec(context.Background(), `UPDATE usernames SET username = '' WHERE canonical = (SELECT min(canonical) FROM usernames)`)
	if err == nil || !strings.Contains(err.Error(), "usernames_username_not_empty") {
		t.Errorf("after the swap, an empty username: %v, want the test-only CHECK to refuse it", err)
	}
}

// TestRebuildWithoutTheMigrationLosesIt shows the test above can fail: a
// build that runs fewer migrations than the live database had gives a
// shadow whose catalog differs.
func TestRebuildWithoutTheMigrationLosesIt(t *testing.T) {
	t.Parallel()
	e := setup(t)
	if _, err := pg.Migrate(context.Background(), e.pool, append(migrations.All(), testOnlyMigration), testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	e.generate(50, true)
	if _, err := rebuild.Build(context.Background(), e.config()); err != nil {
		t.Fatal(err)
	}
	if got, live := e.catalog(rebuild.ShadowSchema), e.catalog("public"); slices.Equal(got, live) {
		t.Errorf("shadow built without the test-only migration has the live catalog: %q", got)
	}
}
