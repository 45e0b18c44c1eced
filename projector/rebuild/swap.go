package rebuild

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/projector/internal/fence"
	"github.com/usernameregistry/registry/projector/internal/projection"
	"github.com/usernameregistry/registry/projector/migrations"
)

// ErrUnaccounted is wrapped when the live projection holds decisions that
// neither the topics nor the outbox hold: swapping would lose them.
var ErrUnaccounted = errors.New("the live projection holds decisions the shadow cannot account for")

// PartitionSwap is what a swap did to one partition's progress.
type PartitionSwap struct {
	Partition int32
	Live      int64 // live next_offset before the swap; -1 when there was no row
	Shadow    int64 // the shadow's next_offset after catching up
	Final     int64 // the next_offset the projectors resume from
	Epoch     int64 // the owner_epoch after the swap, which fences every earlier owner
}

// SwapReport says what Swap did.
type SwapReport struct {
	// OldSchema now holds the replaced live usernames and requests tables.
	OldSchema string
	// CaughtUp counts the decisions the shadow took from registrations
	// records written since the build captured its end offsets, and
	// FromOutbox those committed live but not yet published.
	CaughtUp, FromOutbox int64
	Partitions           []PartitionSwap
	// LockWait is how long the swap waited for the projectors' batches
	// in flight; Held is how long it then held them off.
	LockWait, Held time.Duration
}

// LockTimeout bounds how long a swap waits for the projectors' batches in
// flight and for the API's reads of the tables it replaces.
const LockTimeout = 30 * time.Second

// Swap atomically replaces the live usernames and requests tables with the
// shadow's, in one transaction:
//
//  1. It locks claim_partitions (EXCLUSIVE, then every row FOR UPDATE).
//     That waits for any projector batch in flight, whose compare-and-set
//     holds a row, and blocks new batches and epoch bumps until commit.
//  2. It catches the shadow up: the registrations records written since
//     the build's end offsets, then the outbox (committed, not yet
//     published), deduplicated by position as in the build. The outbox
//     is read before the topic's new ends are listed, so a decision is
//     either still in the outbox or below those ends.
//  3. Each partition resumes at max(live next_offset, shadow next_offset).
//     Live can only be ahead because of claims whose decisions were
//     copies of earlier ones (a repeated request_id), which change
//     nothing; if live holds a ledger or usernames row at or past the
//     shadow's position, the swap aborts with ErrUnaccounted.
//  4. It moves the live usernames and requests into a new schema
//     registry_old_<unix time>, the shadow's into the live schema, and
//     sets next_offset and owner_epoch = owner_epoch + 1 on every
//     partition, which fences every running projector: its next
//     compare-and-set fails, and it resumes from the rebuilt offsets
//     when the partition is assigned again. topic_layout and outbox stay.
//  5. It commits. Anything failing before leaves live untouched.
func Swap(ctx context.Context, cfg Config) (*SwapReport, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	unlock, err := lock(ctx, cfg.Pool)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := checkComplete(ctx, cfg.Pool); err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(cfg.Kafka...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if _, err := CheckLog(ctx, adm, cfg.Topics); err != nil {
		return nil, err
	}
	rep := &SwapReport{OldSchema: OldSchemaPrefix + strconv.FormatInt(time.Now().Unix(), 10)}
	start := time.Now()
	err = pgx.BeginFunc(ctx, cfg.Pool, func(tx pgx.Tx) error {
		live, err := lockPositions(ctx, tx)
		if err != nil {
			return err
		}
		rep.LockWait = time.Since(start)
		next, err := catchUp(ctx, cfg, tx, adm, rep)
		if err != nil {
			return err
		}
		if rep.Partitions, err = positions(ctx, tx, live, next); err != nil {
			return err
		}
		return replace(ctx, tx, rep)
	})
	if err != nil {
		return nil, err
	}
	rep.Held = time.Since(start) - rep.LockWait
	return rep, nil
}

// lockPositions takes the projectors' partitions rows and returns their
// next offsets.
func lockPositions(ctx context.Context, tx pgx.Tx) (map[int32]int64, error) {
	if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = `+strconv.FormatInt(LockTimeout.Milliseconds(), 10)); err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE claim_partitions IN EXCLUSIVE MODE`); err != nil {
		return nil, fmt.Errorf("locking claim_partitions (waiting for the projectors' batches in flight): %w", err)
	}
	rows, err := tx.Query(ctx, `SELECT partition, next_offset FROM claim_partitions ORDER BY partition FOR UPDATE`)
	if err != nil {
		return nil, fmt.Errorf("locking claim_partitions rows: %w", err)
	}
	live := map[int32]int64{}
	var p int32
	var n int64
	_, err = pgx.ForEachRow(rows, []any{&p, &n}, func() error { live[p] = n; return nil })
	if err != nil {
		return nil, fmt.Errorf("locking claim_partitions rows: %w", err)
	}
	return live, nil
}

// catchUp applies to the shadow what was decided live since the build
// captured its end offsets, and returns the shadow's positions.
func catchUp(ctx context.Context, cfg Config, tx pgx.Tx, adm *kadm.Client, rep *SwapReport) (map[int32]int64, error) {
	s := q(ShadowSchema)
	next, err := offsetsFrom(ctx, tx, `SELECT partition, next_offset FROM `+s+`.claim_partitions`)
	if err != nil {
		return nil, err
	}
	from, err := offsetsFrom(ctx, tx, `SELECT partition, end_offset FROM `+s+`.source_ends`)
	if err != nil {
		return nil, err
	}
	outbox, err := readOutbox(ctx, tx)
	if err != nil {
		return nil, err
	}
	ends, err := Ends(ctx, adm, cfg.Topics.Registrations)
	if err != nil {
		return nil, err
	}
	c := &collector{}
	ap := &applier{l: nil, rep: &BuildReport{Next: next}, samples: cfg.Samples, k: newKeyed(len(next))}
	err = read(ctx, cfg.Kafka, cfg.Topics.Registrations, Offsets(from), ends, func(_ int32, recs []*kgo.Record) error {
		for _, r := range recs {
			if err := c.apply(ap, r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("catching up from registrations: %w", err)
	}
	rep.CaughtUp = ap.rep.Decisions
	for _, r := range outbox {
		if err := c.apply(ap, r); err != nil {
			return nil, err
		}
	}
	rep.FromOutbox = ap.rep.Decisions - rep.CaughtUp
	if ap.rep.Unreadable > 0 {
		cfg.Logger.Warn("unreadable records while catching up; skipped", "count", ap.rep.Unreadable, "first", ap.rep.UnreadableSamples)
	}
	ap.k.liveRows(c)
	if err := ap.k.write(ctx, tx, ShadowSchema); err != nil {
		return nil, err
	}
	if err := c.write(ctx, tx); err != nil {
		return nil, err
	}
	return next, nil
}

func offsetsFrom(ctx context.Context, tx pgx.Tx, sql string) (map[int32]int64, error) {
	rows, err := tx.Query(ctx, sql)
	if err != nil {
		return nil, fmt.Errorf("reading the shadow's offsets: %w", err)
	}
	out := map[int32]int64{}
	var p int32
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&p, &n}, func() error { out[p] = n; return nil }); err != nil {
		return nil, fmt.Errorf("reading the shadow's offsets: %w", err)
	}
	return out, nil
}

// readOutbox returns the outbox rows as the records they will be
// published as, in publication order.
func readOutbox(ctx context.Context, tx pgx.Tx) ([]*kgo.Record, error) {
	rows, err := tx.Query(ctx, `SELECT claim_partition, key, event_type, value FROM outbox WHERE topic = 'registrations' ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("reading the outbox: %w", err)
	}
	recs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*kgo.Record, error) {
		var p int32
		var key, value []byte
		var typ string
		if err := r.Scan(&p, &key, &typ, &value); err != nil {
			return nil, err
		}
		return events.DecisionRecord(key, p, typ, value), nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the outbox: %w", err)
	}
	return recs, nil
}

// collector gathers the catch-up's rows, to write them with one COPY per
// table inside the swap's transaction.
type collector struct {
	requests, usernames, conflicts [][]any
}

func (c *collector) apply(ap *applier, r *kgo.Record) error {
	d := ap.decode(r)
	if d == nil {
		return nil
	}
	if d.ClaimOffset < ap.rep.Next[d.ClaimPartition] {
		return nil // a copy of a decision the shadow has
	}
	ap.rep.Next[d.ClaimPartition] = d.ClaimOffset + 1
	ap.rep.Decisions++
	if d.change.Activate != 0 {
		return fmt.Errorf("%w: claims %d/%d", ErrPolicyUpgrade, d.ClaimPartition, d.ClaimOffset)
	}
	if _, err := ap.k.add(d.Decision, d.change); err != nil {
		return err
	}
	rs, err := changeRows(d.Decision, d.value, d.change)
	if err != nil {
		return err
	}
	c.requests = append(c.requests, rs.request...)
	c.usernames = append(c.usernames, rs.username...)
	c.conflicts = append(c.conflicts, rs.conflict...)
	return nil
}

func (c *collector) write(ctx context.Context, tx pgx.Tx) error {
	for _, t := range []struct {
		table string
		cols  []string
		rows  [][]any
	}{
		{"requests", projection.RequestColumns, c.requests}, {"usernames", projection.HolderColumns, c.usernames}, {"conflicts", conflictCols, c.conflicts},
	} {
		if len(t.rows) == 0 {
			continue
		}
		if _, err := tx.CopyFrom(ctx, ident(ShadowSchema, t.table), t.cols, pgx.CopyFromRows(t.rows)); err != nil {
			return fmt.Errorf("catching up %s: %w", t.table, err)
		}
	}
	return nil
}

// positions decides where each partition resumes and checks that the
// shadow accounts for everything live decided.
func positions(ctx context.Context, tx pgx.Tx, live, shadow map[int32]int64) ([]PartitionSwap, error) {
	var out []PartitionSwap
	for _, p := range sortedPartitions(shadow) {
		l, ok := live[p]
		ps := PartitionSwap{Partition: p, Live: l, Shadow: shadow[p], Final: max(l, shadow[p])}
		if !ok {
			ps.Live = -1
		}
		if l > shadow[p] {
			var n int64
			err := tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM requests WHERE claim_partition = $1 AND claim_offset >= $2)
				+ (SELECT count(*) FROM usernames WHERE claim_partition = $1 AND claim_offset >= $2)`, p, shadow[p]).Scan(&n)
			if err != nil {
				return nil, fmt.Errorf("checking partition %d: %w", p, err)
			}
			if n > 0 {
				return nil, fmt.Errorf("%w: partition %d: live has decided up to offset %d and holds %d rows at or past offset %d, where the topics and the outbox end; nothing was changed",
					ErrUnaccounted, p, l, n, shadow[p])
			}
		}
		out = append(out, ps)
	}
	for p := range live {
		if _, ok := shadow[p]; !ok {
			return nil, fmt.Errorf("%w: live has partition %d, which the topics do not", ErrUnaccounted, p)
		}
	}
	return out, nil
}

// replace moves the tables and fences the projectors.
func replace(ctx context.Context, tx pgx.Tx, rep *SwapReport) error {
	var live string
	if err := tx.QueryRow(ctx, `SELECT current_schema()`).Scan(&live); err != nil {
		return err
	}
	old, shadow, cur := q(rep.OldSchema), q(ShadowSchema), q(live)
	tables := make([]string, len(migrations.Projection))
	for i, t := range migrations.Projection {
		tables[i] = pgx.Identifier{t}.Sanitize()
	}
	stmts := []string{`LOCK TABLE ` + strings.Join(tables, ", ") + ` IN ACCESS EXCLUSIVE MODE`, `CREATE SCHEMA ` + old}
	for _, t := range tables {
		stmts = append(stmts, `ALTER TABLE `+cur+`.`+t+` SET SCHEMA `+old)
	}
	for _, t := range tables {
		stmts = append(stmts, `ALTER TABLE `+shadow+`.`+t+` SET SCHEMA `+cur)
	}
	// The partitions' policy state follows from the decisions too (a
	// policy upgrade's freezes, carries and activations).
	stmts = append(stmts, `UPDATE `+cur+`.claim_partitions c SET policy_version = s.policy_version, frozen_to = s.frozen_to, staged = s.staged
		FROM `+shadow+`.claim_partitions s WHERE c.partition = s.partition`)
	stmts = append(stmts, `DROP SCHEMA `+shadow+` CASCADE`)
	for _, stmt := range stmts {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("swapping tables (%s): %w", stmt, err)
		}
	}
	parts, offs := make([]int32, len(rep.Partitions)), make([]int64, len(rep.Partitions))
	for i, p := range rep.Partitions {
		parts[i], offs[i] = p.Partition, p.Final
	}
	bumped, err := fence.Bump(ctx, tx, parts, offs)
	if err != nil {
		return fmt.Errorf("setting the rebuilt positions: %w", err)
	}
	epochs := map[int32]int64{}
	for _, b := range bumped {
		epochs[b.Partition] = b.Epoch
	}
	for i := range rep.Partitions {
		rep.Partitions[i].Epoch = epochs[rep.Partitions[i].Partition]
	}
	return nil
}
