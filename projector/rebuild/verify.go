package rebuild

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrShadowIncomplete is returned by Verify and Swap when the shadow
// schema is missing or its build did not finish.
var ErrShadowIncomplete = errors.New("no complete shadow projection: run registry rebuild first (an interrupted rebuild leaves an incomplete one)")

// Diff is one kind of difference between the live and the shadow
// projection: how many rows differ that way, and the first few.
type Diff struct {
	Kind    string
	Count   int64
	Samples []string
}

// PartitionPosition compares a partition's progress. Live is -1 when the
// live projection has no row for the partition.
type PartitionPosition struct {
	Partition    int32
	Live, Shadow int64
}

// VerifyReport compares the shadow projection with the live one.
//
// Only decisions the shadow could know are compared: a live row whose
// claim lies at or past the shadow's next offset for its partition was
// decided after the rebuild captured its end offsets, and is counted in
// NotCompared. A shadow row the live projection lacks is always a
// difference: the live projection is behind the topics (a lost or
// restored database).
type VerifyReport struct {
	LiveUsernames, ShadowUsernames int64
	LiveRequests, ShadowRequests   int64
	NotCompared                    int64
	Diffs                          []Diff
	// Positions lists the partitions whose progress differs.
	Positions []PartitionPosition
}

// Drift reports whether the projections disagree on anything both know:
// a row difference, or a partition where the shadow is ahead of live.
func (r *VerifyReport) Drift() bool {
	for _, d := range r.Diffs {
		if d.Count > 0 {
			return true
		}
	}
	for _, p := range r.Positions {
		if p.Shadow > p.Live {
			return true
		}
	}
	return false
}

// diffQueries are the comparisons Verify runs, by kind. Each returns a
// sample description and the total count (a window count), first N rows.
func diffQueries(schema string) []struct{ kind, sql string } {
	s := q(schema)
	compared := func(alias string) string {
		return fmt.Sprintf(`EXISTS (SELECT 1 FROM %s.claim_partitions pos WHERE pos.partition = %s.claim_partition AND %s.claim_offset < pos.next_offset)`, s, alias, alias)
	}
	return []struct{ kind, sql string }{
		{"usernames only live", `SELECT l.canonical || ' held by ' || l.user_id, count(*) OVER () FROM usernames l
			WHERE ` + compared("l") + ` AND NOT EXISTS (SELECT 1 FROM ` + s + `.usernames s WHERE s.key = l.key AND s.canonical = l.canonical) ORDER BY l.canonical LIMIT $1`},
		{"usernames only shadow", `SELECT s.canonical || ' held by ' || s.user_id, count(*) OVER () FROM ` + s + `.usernames s
			WHERE NOT EXISTS (SELECT 1 FROM usernames l WHERE l.key = s.key AND l.canonical = s.canonical) ORDER BY s.canonical LIMIT $1`},
		{"usernames differ", `SELECT 'live ' || ROW(l.*)::text || ' shadow ' || ROW(s.*)::text, count(*) OVER () FROM usernames l
			JOIN ` + s + `.usernames s ON s.key = l.key AND s.canonical = l.canonical WHERE ROW(l.*) IS DISTINCT FROM ROW(s.*) ORDER BY l.canonical LIMIT $1`},
		{"requests only live", `SELECT l.request_id || ' in partition ' || l.claim_partition || ' at ' || l.claim_offset, count(*) OVER () FROM requests l
			WHERE ` + compared("l") + ` AND NOT EXISTS (SELECT 1 FROM ` + s + `.requests s WHERE s.request_id = l.request_id AND s.claim_partition = l.claim_partition)
			ORDER BY l.claim_partition, l.claim_offset LIMIT $1`},
		{"requests only shadow", `SELECT s.request_id || ' in partition ' || s.claim_partition || ' at ' || s.claim_offset, count(*) OVER () FROM ` + s + `.requests s
			WHERE NOT EXISTS (SELECT 1 FROM requests l WHERE l.request_id = s.request_id AND l.claim_partition = s.claim_partition)
			ORDER BY s.claim_partition, s.claim_offset LIMIT $1`},
		{"requests differ", `SELECT l.request_id || ' in partition ' || l.claim_partition || ': live ' || convert_from(l.decision, 'UTF8') || ' shadow ' || convert_from(s.decision, 'UTF8')
			|| CASE WHEN ROW(l.*) IS DISTINCT FROM ROW(s.*) AND l.decision = s.decision THEN ' (columns differ)' ELSE '' END, count(*) OVER ()
			FROM requests l JOIN ` + s + `.requests s ON s.request_id = l.request_id AND s.claim_partition = l.claim_partition
			WHERE ROW(l.*) IS DISTINCT FROM ROW(s.*) ORDER BY l.claim_partition, l.claim_offset LIMIT $1`},
	}
}

// Verify compares the shadow projection Build left with the live one.
func Verify(ctx context.Context, cfg Config) (*VerifyReport, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	if err := checkComplete(ctx, cfg.Pool); err != nil {
		return nil, err
	}
	rep := &VerifyReport{}
	s := q(ShadowSchema)
	err := cfg.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM usernames), (SELECT count(*) FROM `+s+`.usernames),
		(SELECT count(*) FROM requests), (SELECT count(*) FROM `+s+`.requests),
		(SELECT count(*) FROM usernames l WHERE NOT EXISTS (SELECT 1 FROM `+s+`.claim_partitions pos WHERE pos.partition = l.claim_partition AND l.claim_offset < pos.next_offset))
		+ (SELECT count(*) FROM requests l WHERE NOT EXISTS (SELECT 1 FROM `+s+`.claim_partitions pos WHERE pos.partition = l.claim_partition AND l.claim_offset < pos.next_offset))`).
		Scan(&rep.LiveUsernames, &rep.ShadowUsernames, &rep.LiveRequests, &rep.ShadowRequests, &rep.NotCompared)
	if err != nil {
		return nil, fmt.Errorf("counting rows: %w", err)
	}
	for _, dq := range diffQueries(ShadowSchema) {
		d, err := diff(ctx, cfg.Pool, dq.kind, dq.sql, cfg.Samples)
		if err != nil {
			return nil, err
		}
		rep.Diffs = append(rep.Diffs, d)
	}
	rep.Positions, err = positionDiffs(ctx, cfg.Pool)
	return rep, err
}

func diff(ctx context.Context, pool *pgxpool.Pool, kind, sql string, samples int) (Diff, error) {
	d := Diff{Kind: kind}
	rows, err := pool.Query(ctx, sql, samples)
	if err != nil {
		return d, fmt.Errorf("comparing %s: %w", kind, err)
	}
	for rows.Next() {
		var sample string
		if err := rows.Scan(&sample, &d.Count); err != nil {
			return d, fmt.Errorf("comparing %s: %w", kind, err)
		}
		d.Samples = append(d.Samples, sample)
	}
	if err := rows.Err(); err != nil {
		return d, fmt.Errorf("comparing %s: %w", kind, err)
	}
	return d, nil
}

func positionDiffs(ctx context.Context, pool *pgxpool.Pool) ([]PartitionPosition, error) {
	rows, err := pool.Query(ctx, `SELECT s.partition, coalesce(l.next_offset, -1), s.next_offset
		FROM `+q(ShadowSchema)+`.claim_partitions s LEFT JOIN claim_partitions l ON l.partition = s.partition
		WHERE l.next_offset IS DISTINCT FROM s.next_offset ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("comparing positions: %w", err)
	}
	ps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (PartitionPosition, error) {
		var p PartitionPosition
		return p, r.Scan(&p.Partition, &p.Live, &p.Shadow)
	})
	if err != nil {
		return nil, fmt.Errorf("comparing positions: %w", err)
	}
	return ps, nil
}

// checkComplete fails with ErrShadowIncomplete unless a build finished.
func checkComplete(ctx context.Context, db interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) error {
	var exists bool
	if err := db.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, ShadowSchema+".complete").Scan(&exists); err != nil {
		return fmt.Errorf("checking the shadow: %w", err)
	}
	if exists {
		if err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+q(ShadowSchema)+`.complete)`).Scan(&exists); err != nil {
			return fmt.Errorf("checking the shadow: %w", err)
		}
	}
	if !exists {
		return ErrShadowIncomplete
	}
	return nil
}
