package rebuild

import (
	"fmt"

	"github.com/jackc/pgx/v5"
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

// The projection's columns, in the order the loaders send them.
var (
	requestCols  = []string{"request_id", "claim_partition", "claim_offset", "user_id", "username", "canonical", "outcome", "reason", "decision"}
	usernameCols = []string{"canonical", "key", "username", "user_id", "request_id", "claim_partition", "claim_offset", "registered_at"}
	conflictCols = []string{"claim_partition", "claim_offset", "request_id", "decision"}
	copyCols     = []string{"claim_partition", "claim_offset", "decision"}
)

func ident(schema, table string) pgx.Identifier { return pgx.Identifier{schema, table} }

func q(schema string) string { return pgx.Identifier{schema}.Sanitize() }

// createSchema drops schema and creates it empty: the projection tables
// shaped like the live ones (columns, defaults, NOT NULL and CHECK
// constraints, comments) but without indexes, which are built after the
// load; and the bookkeeping tables of a build.
func createSchema(schema string) []string {
	s := q(schema)
	return []string{
		`DROP SCHEMA IF EXISTS ` + s + ` CASCADE`,
		`CREATE SCHEMA ` + s,
		`CREATE TABLE ` + s + `.usernames (LIKE usernames INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING COMMENTS)`,
		`CREATE TABLE ` + s + `.requests (LIKE requests INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING COMMENTS)`,
		// request_conflict decisions: published, never in the ledger, but
		// they advance their partition and copies of them are checked.
		`CREATE TABLE ` + s + `.conflicts (claim_partition integer NOT NULL, claim_offset bigint NOT NULL, request_id uuid NOT NULL, decision bytea NOT NULL)`,
		// copies: records naming a position already loaded; checked against
		// the first after the load.
		`CREATE TABLE ` + s + `.copies (claim_partition integer NOT NULL, claim_offset bigint NOT NULL, decision bytea NOT NULL)`,
		// the rebuilt progress: next_offset is the first claims offset of
		// the partition that the shadow holds no decision for.
		`CREATE TABLE ` + s + `.claim_partitions (partition integer PRIMARY KEY, next_offset bigint NOT NULL)`,
		// the registrations end offsets the build read up to.
		`CREATE TABLE ` + s + `.source_ends (partition integer PRIMARY KEY, end_offset bigint NOT NULL)`,
		// one row once the build finished and passed its checks.
		`CREATE TABLE ` + s + `.complete (finished_at timestamptz NOT NULL DEFAULT now())`,
	}
}

// indexSQL builds the constraints and indexes of the live tables (see
// 001_init.up.sql), with the same names, in two independent groups that
// can run at once.
func indexSQL(schema string) [][]string {
	s := q(schema)
	return [][]string{
		{
			`ALTER TABLE ` + s + `.usernames ADD CONSTRAINT usernames_pkey PRIMARY KEY (canonical)`,
			`ALTER TABLE ` + s + `.usernames ADD CONSTRAINT usernames_key_key UNIQUE (key)`,
			`CREATE INDEX conflicts_position ON ` + s + `.conflicts (claim_partition, claim_offset)`,
		},
		{
			`ALTER TABLE ` + s + `.requests ADD CONSTRAINT requests_pkey PRIMARY KEY (request_id, claim_partition)`,
			`CREATE UNIQUE INDEX requests_claim_position ON ` + s + `.requests (claim_partition, claim_offset)`,
		},
	}
}

// duplicatesSQL lists values held twice where a constraint wants one,
// for the error that explains a failed index build.
func duplicatesSQL(schema string) map[string]string {
	s := q(schema)
	return map[string]string{
		"usernames_pkey":          `SELECT canonical, count(*) FROM ` + s + `.usernames GROUP BY 1 HAVING count(*) > 1 ORDER BY 1 LIMIT $1`,
		"usernames_key_key":       `SELECT key, count(*) FROM ` + s + `.usernames GROUP BY 1 HAVING count(*) > 1 ORDER BY 1 LIMIT $1`,
		"requests_pkey":           `SELECT request_id::text || ' in partition ' || claim_partition, count(*) FROM ` + s + `.requests GROUP BY request_id, claim_partition HAVING count(*) > 1 ORDER BY 1 LIMIT $1`,
		"requests_claim_position": `SELECT claim_partition || '/' || claim_offset, count(*) FROM ` + s + `.requests GROUP BY claim_partition, claim_offset HAVING count(*) > 1 ORDER BY 1 LIMIT $1`,
	}
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
