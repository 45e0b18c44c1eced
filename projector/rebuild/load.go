package rebuild

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/projector/internal/projection"
	"github.com/usernameregistry/registry/projector/migrations"
)

// ErrInvariant is wrapped when a built projection breaks a rule the live
// one enforces: two holders of one canonical name or one key, or two
// ledger rows for one request_id in a partition.
var ErrInvariant = errors.New("the rebuilt projection breaks an invariant")

// loader bulk-loads a projection into schema's unindexed tables, one COPY
// per table, each on its own connection.
type loader struct {
	pool      *pgxpool.Pool
	schema    string
	requests  *copyStream
	usernames *copyStream
	conflicts *copyStream
	copies    *copyStream
}

func startLoader(ctx context.Context, pool *pgxpool.Pool, schema string) *loader {
	return &loader{
		pool: pool, schema: schema,
		requests:  startCopy(ctx, pool, ident(schema, "requests"), projection.RequestColumns),
		usernames: startCopy(ctx, pool, ident(schema, "usernames"), projection.HolderColumns),
		conflicts: startCopy(ctx, pool, ident(schema, "conflicts"), conflictCols),
		copies:    startCopy(ctx, pool, ident(schema, "copies"), copyCols),
	}
}

// rowSet is the rows one decision adds to the projection.
type rowSet struct {
	request, username, conflict [][]any
}

// ErrPolicyUpgrade is wrapped when a partition activated a new username
// policy version while a rebuild was catching up before its swap: the
// staged entries are in the built shadow only, so the rebuild must be run
// again.
var ErrPolicyUpgrade = errors.New("a username policy upgrade activated during the rebuild's catch-up; run the rebuild again")

// changeRows returns the rows of decision d (with its exact bytes, value),
// first at its position, whose fold gave c: its change's ledger row and
// holder, or, for request_conflict (which changes nothing), a conflicts
// row.
func changeRows(d *events.Decision, value []byte, c projection.Change) (rowSet, error) {
	var rs rowSet
	if c.Entry == nil {
		id, err := uuid.Parse(d.RequestID)
		if err != nil {
			return rs, fmt.Errorf("request_id %q: %w", d.RequestID, err)
		}
		rs.conflict = [][]any{{d.ClaimPartition, d.ClaimOffset, [16]byte(id), value}}
		return rs, nil
	}
	row, err := c.Entry.Row()
	if err != nil {
		return rs, err
	}
	rs.request = [][]any{row}
	if c.Holder != nil {
		if row, err = c.Holder.Row(); err != nil {
			return rs, err
		}
		rs.username = [][]any{row}
	}
	return rs, nil
}

// decision queues the rows of a decision seen for the first time.
func (l *loader) decision(ctx context.Context, d *decision) error {
	rs, err := changeRows(d.Decision, d.value, d.change)
	if err != nil {
		return err
	}
	return l.add(ctx, rs)
}

func (l *loader) add(ctx context.Context, rs rowSet) error {
	for _, r := range rs.request {
		if err := l.requests.add(ctx, r...); err != nil {
			return err
		}
	}
	for _, r := range rs.username {
		if err := l.usernames.add(ctx, r...); err != nil {
			return err
		}
	}
	for _, r := range rs.conflict {
		if err := l.conflicts.add(ctx, r...); err != nil {
			return err
		}
	}
	return nil
}

func (l *loader) copy(ctx context.Context, partition int32, offset int64, value []byte) error {
	return l.copies.add(ctx, partition, offset, value)
}

// close waits for every COPY; on any failure the others are stopped.
func (l *loader) close(ctx context.Context) error {
	var errs []error
	for _, s := range l.streams() {
		errs = append(errs, s.close(ctx))
	}
	return errors.Join(errs...)
}

func (l *loader) abort() {
	for _, s := range l.streams() {
		s.abort()
	}
}

func (l *loader) streams() []*copyStream {
	return []*copyStream{l.requests, l.usernames, l.conflicts, l.copies}
}

// finish writes the rebuilt positions, builds the deferred indexes and
// constraints (one table's at a time on each of two connections), and
// checks the copies. It returns the positions of copies that contradict the
// first decision at their place, and how many.
func finish(ctx context.Context, pool *pgxpool.Pool, schema string, ixs []deferredIndex, next map[int32]int64, partitions int32, samples int) ([]string, int, error) {
	parts, offs := make([]int32, 0, partitions), make([]int64, 0, partitions)
	for p := range partitions {
		parts, offs = append(parts, p), append(offs, next[p])
	}
	if _, err := pool.Exec(ctx, `INSERT INTO `+q(schema)+`.claim_partitions (partition, next_offset) SELECT * FROM unnest($1::int[], $2::bigint[])
ON CONFLICT (partition) DO UPDATE SET next_offset = excluded.next_offset`, parts, offs); err != nil {
		return nil, 0, fmt.Errorf("writing rebuilt positions: %w", err)
	}
	if err := buildIndexes(ctx, pool, schema, ixs, samples); err != nil {
		return nil, 0, err
	}
	tables := []string{q(schema) + `.conflicts`, q(schema) + `.copies`}
	for _, t := range migrations.Projection {
		tables = append(tables, ident(schema, t).Sanitize())
	}
	if _, err := pool.Exec(ctx, `ANALYZE `+strings.Join(tables, ", ")); err != nil {
		return nil, 0, fmt.Errorf("analyzing the rebuilt tables: %w", err)
	}
	return contradictingCopies(ctx, pool, schema, samples)
}

// buildIndexes builds ixs, each table's in turn, two tables at once.
func buildIndexes(ctx context.Context, pool *pgxpool.Pool, schema string, ixs []deferredIndex, samples int) error {
	byTable := map[string][]deferredIndex{}
	for _, d := range ixs {
		byTable[d.table] = append(byTable[d.table], d)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(2)
	for _, group := range byTable {
		g.Go(func() error {
			conn, err := pool.Acquire(gctx)
			if err != nil {
				return err
			}
			defer conn.Release()
			// Sort a million keys in memory rather than in temporary files.
			if _, err := conn.Exec(gctx, `SET maintenance_work_mem = '256MB'`); err != nil {
				return err
			}
			defer conn.Exec(context.WithoutCancel(gctx), `RESET maintenance_work_mem`) //nolint:errcheck // the connection goes back to the pool either way
			for _, d := range group {
				if _, err := conn.Exec(gctx, d.build(schema)); err != nil {
					return explainIndexFailure(gctx, pool, schema, d, err, samples)
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// explainIndexFailure turns a unique violation while building d into
// ErrInvariant with the first duplicated values.
func explainIndexFailure(ctx context.Context, pool *pgxpool.Pool, schema string, d deferredIndex, err error, samples int) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23505" {
		return fmt.Errorf("building index %s: %w", d.name, err)
	}
	query := d.duplicatesSQL(schema)
	if query == "" {
		return fmt.Errorf("%w: %s", ErrInvariant, pgErr.Message)
	}
	rows, qerr := pool.Query(context.WithoutCancel(ctx), query, samples)
	if qerr != nil {
		return fmt.Errorf("%w: %s (listing them: %v)", ErrInvariant, pgErr.Message, qerr)
	}
	dups, qerr := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var v string
		var n int64
		err := r.Scan(&v, &n)
		return fmt.Sprintf("%s (%d times)", v, n), err
	})
	if qerr != nil {
		return fmt.Errorf("%w: %s (listing them: %v)", ErrInvariant, pgErr.Message, qerr)
	}
	return fmt.Errorf("%w: %s is not unique: %s", ErrInvariant, d.name, strings.Join(dups, ", "))
}

func contradictingCopies(ctx context.Context, pool *pgxpool.Pool, schema string, samples int) ([]string, int, error) {
	rows, err := pool.Query(ctx, contradictingCopiesSQL(schema), samples)
	if err != nil {
		return nil, 0, fmt.Errorf("checking copies: %w", err)
	}
	var out []string
	total := 0
	for rows.Next() {
		var p int32
		var o, n int64
		if err := rows.Scan(&p, &o, &n); err != nil {
			return nil, 0, fmt.Errorf("checking copies: %w", err)
		}
		out, total = append(out, fmt.Sprintf("%d/%d", p, o)), int(n)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("checking copies: %w", err)
	}
	return out, total, nil
}

// sortedPartitions returns the keys of m in order.
func sortedPartitions[V any](m map[int32]V) []int32 {
	ps := make([]int32, 0, len(m))
	for p := range m {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	return ps
}
