// Package upgrade moves a running registry from its username policy
// version to a newer one through the claims log (registry policy diff and
// registry policy upgrade; docs/design.md "Upgrading the username
// policy", docs/operations.md "Upgrading the username policy"). The
// records it writes are decided by the projector's one decision rule
// (projector/internal/projection, upgrade.go), so a replay and a rebuild
// reproduce the upgrade.
package upgrade

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/kafka"
	"github.com/usernameregistry/registry/projector/internal/projection"
)

// Entry is one holder, hold or runtime reservation of the projection and
// what it becomes under the new version.
type Entry struct {
	projection.CarriedEntry
	Canonical    string `json:"canonical"`     // under the new version
	Key          string `json:"key"`           // under the new version
	Valid        bool   `json:"valid"`         // the new version accepts the name as typed
	OldPartition int32  `json:"old_partition"` // partition of OldKey
	NewPartition int32  `json:"new_partition"` // partition of Key
}

// Group is a grandfathered group: holders the new version puts under one key.
type Group struct {
	Key       string   `json:"key"`
	Partition int32    `json:"partition"`
	Holders   []string `json:"holders"` // the names as typed, sorted
}

// Report is what registry policy diff prints.
type Report struct {
	From, To   int
	Holders    int     // holders read
	Invalid    []Entry // holders whose names the new version refuses
	Changed    []Entry // holders whose canonical form or key changes
	Shadows    []Entry // refused names also carried under the key of their displayed form
	Groups     []Group // keys with several holders under the new version
	Clashes    []Group // several holders with one canonical form under one key: the upgrade refuses to run
	entries    []Entry // every entry to carry
	partitions int
}

// Diff reads the projection of pool (claims topic of partitions
// partitions) and reports what moving it to version to would do. It
// changes nothing.
func Diff(ctx context.Context, pool *pgxpool.Pool, partitions, to int) (*Report, error) {
	policy, err := username.ForVersion(to)
	if err != nil {
		return nil, err
	}
	var from int
	if err := pool.QueryRow(ctx, `SELECT version FROM username_policy`).Scan(&from); err != nil {
		return nil, fmt.Errorf("reading the recorded username policy version: %w", err)
	}
	r := &Report{From: from, To: to, partitions: partitions}
	if to <= from {
		return r, nil
	}
	es, err := readEntries(ctx, pool, from)
	if err != nil {
		return nil, err
	}
	byKey := map[string][]Entry{}
	for _, ce := range es {
		e := Entry{CarriedEntry: ce}
		var ok bool
		e.Canonical, e.Key, e.Valid, ok = projection.CarryName(policy, ce.Username)
		if !ok {
			e.Canonical, e.Key = ce.OldCanonical, ce.OldKey
		}
		e.OldPartition, e.NewPartition = events.Partition([]byte(ce.OldKey), partitions), events.Partition([]byte(e.Key), partitions)
		r.entries = append(r.entries, e)
		if ce.Kind != events.CarryHolder {
			continue
		}
		r.Holders++
		if !e.Valid {
			r.Invalid = append(r.Invalid, e)
		} else if e.Canonical != ce.OldCanonical || e.Key != ce.OldKey {
			r.Changed = append(r.Changed, e)
		}
		byKey[e.Key] = append(byKey[e.Key], e)
		if shown, ok := projection.ShadowKey(policy, ce.Username); ok { // it also blocks what it looks like
			sh := e
			sh.Kind, sh.Key, sh.NewPartition = events.CarryShadow, shown, events.Partition([]byte(shown), partitions)
			r.entries = append(r.entries, sh)
			r.Shadows = append(r.Shadows, sh)
			byKey[shown] = append(byKey[shown], sh)
		}
	}
	for key, hs := range byKey {
		if len(hs) < 2 {
			continue
		}
		g := Group{Key: key, Partition: events.Partition([]byte(key), partitions)}
		canon := map[string]bool{}
		clash := false
		for _, h := range hs {
			g.Holders = append(g.Holders, h.Username)
			clash = clash || canon[h.Canonical]
			canon[h.Canonical] = true
		}
		slices.Sort(g.Holders)
		r.Groups = append(r.Groups, g)
		if clash {
			r.Clashes = append(r.Clashes, g)
		}
	}
	slices.SortFunc(r.Groups, func(a, b Group) int { return strings.Compare(a.Key, b.Key) })
	return r, nil
}

// readEntries reads every holder, hold and reservation of the projection.
func readEntries(ctx context.Context, pool *pgxpool.Pool, from int) ([]projection.CarriedEntry, error) {
	var es []projection.CarriedEntry
	rows, err := pool.Query(ctx, `SELECT username, canonical, key, user_id::text, request_id::text, claim_partition, claim_offset, registered_at, coalesce(granted_under, $1) FROM usernames ORDER BY key, canonical`, from)
	if err != nil {
		return nil, fmt.Errorf("reading holders: %w", err)
	}
	var e projection.CarriedEntry
	_, err = pgx.ForEachRow(rows, []any{&e.Username, &e.OldCanonical, &e.OldKey, &e.UserID, &e.RequestID, &e.Partition, &e.Offset, &e.At, &e.GrantedUnder}, func() error {
		e.Kind = events.CarryHolder
		es = append(es, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading holders: %w", err)
	}
	rows, err = pool.Query(ctx, `SELECT canonical, key, user_id::text, request_id::text, held_until FROM holds ORDER BY key`)
	if err != nil {
		return nil, fmt.Errorf("reading holds: %w", err)
	}
	_, err = pgx.ForEachRow(rows, []any{&e.OldCanonical, &e.OldKey, &e.UserID, &e.RequestID, &e.At}, func() error {
		es = append(es, projection.CarriedEntry{Kind: events.CarryHold, Username: e.OldCanonical, OldCanonical: e.OldCanonical, OldKey: e.OldKey,
			UserID: e.UserID, RequestID: e.RequestID, At: e.At, GrantedUnder: from})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading holds: %w", err)
	}
	rows, err = pool.Query(ctx, `SELECT canonical, key, request_id::text, reserved_at FROM reservations ORDER BY key`)
	if err != nil {
		return nil, fmt.Errorf("reading reservations: %w", err)
	}
	_, err = pgx.ForEachRow(rows, []any{&e.OldCanonical, &e.OldKey, &e.RequestID, &e.At}, func() error {
		es = append(es, projection.CarriedEntry{Kind: events.CarryReservation, Username: e.OldCanonical, OldCanonical: e.OldCanonical,
			OldKey: e.OldKey, RequestID: e.RequestID, At: e.At, GrantedUnder: from})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading reservations: %w", err)
	}
	return es, nil
}

// Failpoints of an upgrade: Config.Failpoint is called with each, and an
// error it returns stops the upgrade there, as a crash would.
const (
	FailAfterStart    = "upgrade-after-start"    // the upgrade is recorded as under way
	FailAfterFreeze   = "upgrade-after-freeze"   // every freeze marker is written
	FailAfterFrozen   = "upgrade-after-frozen"   // every partition decided its freeze, renames and outbox drained, every record before decided
	FailMidCarry      = "upgrade-mid-carry"      // half the carried records are written
	FailAfterCarry    = "upgrade-after-carry"    // every carried record is written and the plan recorded
	FailMidActivate   = "upgrade-mid-activate"   // half the activation markers are written
	FailAfterActivate = "upgrade-after-activate" // every partition activated, the version not yet recorded
)

// Failpoints lists the upgrade's failpoints in the order they are reached.
var Failpoints = []string{FailAfterStart, FailAfterFreeze, FailAfterFrozen, FailMidCarry, FailAfterCarry, FailMidActivate, FailAfterActivate}

// Config configures Run.
type Config struct {
	Pool       *pgxpool.Pool
	Producer   *kgo.Client // produces to the claims topic with the default (murmur2) partitioner, acks from all in-sync replicas
	Topics     events.Topics
	Partitions int
	To         int
	AdminKeys  *events.AdminKeys // signs the records, as the projectors verify them
	// Poll is how often the progress is read from PostgreSQL. Defaults
	// to 100ms.
	Poll time.Duration
	// Failpoint, when set, is called at each of Failpoints.
	Failpoint func(name string) error
	// Out receives the progress, for people. Defaults to io.Discard.
	Out io.Writer
}

// Result is what an upgrade measured.
type Result struct {
	Carried     int                     // HolderCarried records written
	Elapsed     time.Duration           // the whole run
	Waits       map[int32]time.Duration // per partition, from its freeze to its activation as this run saw them
	LongestWait time.Duration
}

// Run moves the registry to version cfg.To. It is resumable and
// idempotent: every record it writes has a request_id derived from the
// version and the entry, so a run after a crash (or a second run) writes
// copies that the ledger answers, and it reads what is done from
// PostgreSQL before each step.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg.Topics = cfg.Topics.WithDefaults()
	cfg.Poll = cmp.Or(cfg.Poll, 100*time.Millisecond)
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.Failpoint == nil {
		cfg.Failpoint = func(string) error { return nil }
	}
	if cfg.AdminKeys == nil {
		return nil, errors.New("policy upgrade: the records must be signed: an admin key file is required (--admin-key-file)")
	}
	policy, err := username.ForVersion(cfg.To)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	res := &Result{Waits: map[int32]time.Duration{}}
	var from, upgrading int
	err = cfg.Pool.QueryRow(ctx, `SELECT version, coalesce(upgrading_to, 0) FROM username_policy`).Scan(&from, &upgrading)
	if err != nil {
		return nil, fmt.Errorf("reading the recorded username policy version: %w", err)
	}
	switch {
	case from == cfg.To && upgrading == 0:
		fmt.Fprintf(cfg.Out, "the registry already decides under username policy version %d: nothing to do\n", cfg.To)
		return res, nil
	case from > cfg.To:
		return nil, fmt.Errorf("the registry decides under username policy version %d; it cannot move back to %d", from, cfg.To)
	case upgrading != 0 && upgrading != cfg.To:
		return nil, fmt.Errorf("an upgrade to version %d is under way; finish it first (registry policy upgrade --to %d)", upgrading, upgrading)
	case cfg.To-from > 1:
		return nil, fmt.Errorf("the registry decides under version %d: upgrade one version at a time (--to %d first)", from, from+1)
	}
	if _, err := cfg.Pool.Exec(ctx, `UPDATE username_policy SET initial_version = coalesce(initial_version, version), upgrading_to = $1`, cfg.To); err != nil {
		return nil, fmt.Errorf("recording the upgrade as under way: %w", err)
	}
	fmt.Fprintf(cfg.Out, "upgrading from username policy version %d to %d over %d partitions\n", from, cfg.To, cfg.Partitions)
	if err := cfg.Failpoint(FailAfterStart); err != nil {
		return nil, err
	}

	// 1. Freeze every partition that has not activated yet.
	st, err := readPartitions(ctx, cfg.Pool, cfg.Partitions)
	if err != nil {
		return nil, err
	}
	var recs []*kgo.Record
	for p := range int32(cfg.Partitions) {
		if st[p].version < cfg.To {
			rec, err := projection.FreezeRecord(cfg.To, p, cfg.Partitions, from)
			if err != nil {
				return nil, err
			}
			recs = append(recs, rec)
		}
	}
	if err := produce(ctx, cfg, recs); err != nil {
		return nil, fmt.Errorf("writing the freeze markers: %w", err)
	}
	fmt.Fprintf(cfg.Out, "freeze markers written: %d\n", len(recs))
	if err := cfg.Failpoint(FailAfterFreeze); err != nil {
		return nil, err
	}
	frozenAt := map[int32]time.Time{}
	if err := waitFor(ctx, cfg, "every partition frozen, no rename under way, the outbox empty", func(st map[int32]partition, drained bool) bool {
		all := true
		for p, s := range st {
			if s.frozenTo == cfg.To || s.version >= cfg.To {
				if _, ok := frozenAt[p]; !ok {
					frozenAt[p] = time.Now()
				}
				continue
			}
			all = false
		}
		return all && drained
	}); err != nil {
		return nil, err
	}
	if err := waitDecided(ctx, cfg); err != nil {
		return nil, err
	}
	if err := cfg.Failpoint(FailAfterFrozen); err != nil {
		return nil, err
	}

	// 2. Carry, unless a partition has activated already: then every
	// carried record was acknowledged before (the activations are written
	// only after all of them), and the plan is recorded.
	if st, err = readPartitions(ctx, cfg.Pool, cfg.Partitions); err != nil {
		return nil, err
	}
	activated := false
	for _, s := range st {
		activated = activated || s.version >= cfg.To
	}
	if !activated {
		rep, err := Diff(ctx, cfg.Pool, cfg.Partitions, cfg.To)
		if err != nil {
			return nil, err
		}
		if len(rep.Clashes) > 0 {
			return nil, fmt.Errorf("%d keys would have two holders of one canonical form under version %d (first: %q, %q); release or transfer one first",
				len(rep.Clashes), cfg.To, rep.Clashes[0].Key, rep.Clashes[0].Holders)
		}
		counts := make([]int32, cfg.Partitions)
		recs = recs[:0]
		for i := range rep.entries {
			rec, err := rep.entries[i].Record(policy, cfg.Partitions)
			if err != nil {
				return nil, err
			}
			counts[rec.Partition]++
			recs = append(recs, rec)
		}
		half := len(recs) / 2
		if err := produce(ctx, cfg, recs[:half]); err != nil {
			return nil, fmt.Errorf("writing the carried entries: %w", err)
		}
		if err := cfg.Failpoint(FailMidCarry); err != nil {
			return nil, err
		}
		if err := produce(ctx, cfg, recs[half:]); err != nil {
			return nil, fmt.Errorf("writing the carried entries: %w", err)
		}
		parts := make([]int32, cfg.Partitions)
		for i := range parts {
			parts[i] = int32(i)
		}
		if _, err := cfg.Pool.Exec(ctx, `
INSERT INTO policy_upgrade_plan (to_version, partition, carried) SELECT $1, p, c FROM unnest($2::int[], $3::int[]) AS u(p, c)
ON CONFLICT (to_version, partition) DO UPDATE SET carried = excluded.carried`, cfg.To, parts, counts); err != nil {
			return nil, fmt.Errorf("recording the upgrade's plan: %w", err)
		}
		res.Carried = len(recs)
		fmt.Fprintf(cfg.Out, "carried: %d entries (%d holders, %d groups, %d names invalid under version %d)\n",
			len(recs), rep.Holders, len(rep.Groups), len(rep.Invalid), cfg.To)
	}
	if err := cfg.Failpoint(FailAfterCarry); err != nil {
		return nil, err
	}

	// 3. Activate every partition that has not.
	plan := map[int32]int{}
	rows, err := cfg.Pool.Query(ctx, `SELECT partition, carried FROM policy_upgrade_plan WHERE to_version = $1`, cfg.To)
	if err != nil {
		return nil, fmt.Errorf("reading the upgrade's plan: %w", err)
	}
	var part int32
	var n int
	if _, err := pgx.ForEachRow(rows, []any{&part, &n}, func() error { plan[part] = n; return nil }); err != nil {
		return nil, fmt.Errorf("reading the upgrade's plan: %w", err)
	}
	if len(plan) != cfg.Partitions {
		return nil, fmt.Errorf("the upgrade's plan covers %d of %d partitions", len(plan), cfg.Partitions)
	}
	recs = recs[:0]
	for p := range int32(cfg.Partitions) {
		if st[p].version < cfg.To {
			rec, err := projection.ActivateRecord(cfg.To, p, cfg.Partitions, plan[p], from)
			if err != nil {
				return nil, err
			}
			recs = append(recs, rec)
		}
	}
	half := len(recs) / 2
	if err := produce(ctx, cfg, recs[:half]); err != nil {
		return nil, fmt.Errorf("writing the activation markers: %w", err)
	}
	if err := cfg.Failpoint(FailMidActivate); err != nil {
		return nil, err
	}
	if err := produce(ctx, cfg, recs[half:]); err != nil {
		return nil, fmt.Errorf("writing the activation markers: %w", err)
	}
	if err := waitFor(ctx, cfg, "every partition activated", func(st map[int32]partition, _ bool) bool {
		all := true
		for p, s := range st {
			if s.version < cfg.To {
				all = false
				continue
			}
			if t, ok := frozenAt[p]; ok {
				if _, done := res.Waits[p]; !done {
					res.Waits[p] = time.Since(t)
					res.LongestWait = max(res.LongestWait, res.Waits[p])
				}
			}
		}
		return all
	}); err != nil {
		return nil, err
	}
	if err := cfg.Failpoint(FailAfterActivate); err != nil {
		return nil, err
	}
	if _, err := cfg.Pool.Exec(ctx, `UPDATE username_policy SET version = $1, upgrading_to = NULL, recorded_at = now()`, cfg.To); err != nil {
		return nil, fmt.Errorf("recording username policy version %d: %w", cfg.To, err)
	}
	res.Elapsed = time.Since(start)
	fmt.Fprintf(cfg.Out, "the registry decides under username policy version %d (took %s; longest partition wait %s)\n",
		cfg.To, res.Elapsed.Round(time.Millisecond), res.LongestWait.Round(time.Millisecond))
	return res, nil
}

// waitDecided waits until every partition has decided every claims
// record written so far. With the outbox empty, every shadow follow-up
// (projection shadow.go) that a decision before the freezes wrote is in
// claims, possibly after its partition's freeze (which still decides it);
// the projection the carry reads must have it decided, or a shadow whose
// holder is gone would be carried into the new version.
func waitDecided(ctx context.Context, cfg Config) error {
	ends, err := kafka.ListEndOffsets(ctx, kadm.NewClient(cfg.Producer), cfg.Topics.Claims)
	if err != nil {
		return fmt.Errorf("listing the claims topic's end offsets: %w", err)
	}
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) { want[o.Partition] = o.Offset })
	t0, last := time.Now(), time.Now()
	for {
		rows, err := cfg.Pool.Query(ctx, `SELECT partition, next_offset FROM claim_partitions`)
		if err != nil {
			return fmt.Errorf("reading the partitions' progress: %w", err)
		}
		next := map[int32]int64{}
		var p int32
		var n int64
		if _, err := pgx.ForEachRow(rows, []any{&p, &n}, func() error { next[p] = n; return nil }); err != nil {
			return fmt.Errorf("reading the partitions' progress: %w", err)
		}
		var behind []int32
		for p, end := range want {
			if next[p] < end {
				behind = append(behind, p)
			}
		}
		if len(behind) == 0 {
			fmt.Fprintf(cfg.Out, "every claims record written before the freeze decided (after %s)\n", time.Since(t0).Round(time.Millisecond))
			return nil
		}
		if time.Since(last) > 5*time.Second {
			last = time.Now()
			slices.Sort(behind)
			fmt.Fprintf(cfg.Out, "waiting for partitions %v to decide up to the claims end offsets (a projector must be running)\n", behind)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(cfg.Poll):
		}
	}
}

// partition is a claims partition's policy state.
type partition struct {
	version  int // the version it decides under
	frozenTo int
}

func readPartitions(ctx context.Context, pool *pgxpool.Pool, n int) (map[int32]partition, error) {
	st := map[int32]partition{}
	var initial int
	if err := pool.QueryRow(ctx, `SELECT coalesce(initial_version, version) FROM username_policy`).Scan(&initial); err != nil {
		return nil, fmt.Errorf("reading the username policy: %w", err)
	}
	for p := range int32(n) {
		st[p] = partition{version: initial}
	}
	rows, err := pool.Query(ctx, `SELECT partition, coalesce(policy_version, $1), coalesce(frozen_to, 0) FROM claim_partitions`, initial)
	if err != nil {
		return nil, fmt.Errorf("reading the partitions' policy: %w", err)
	}
	var p int32
	var s partition
	_, err = pgx.ForEachRow(rows, []any{&p, &s.version, &s.frozenTo}, func() error {
		if p < int32(n) {
			st[p] = s
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the partitions' policy: %w", err)
	}
	return st, nil
}

// waitFor polls the partitions until done says so, printing what it
// waits for every few seconds.
func waitFor(ctx context.Context, cfg Config, what string, done func(map[int32]partition, bool) bool) error {
	t0 := time.Now()
	last := t0
	for {
		st, err := readPartitions(ctx, cfg.Pool, cfg.Partitions)
		if err != nil {
			return err
		}
		var locks, outbox int
		if err := cfg.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM rename_locks), (SELECT count(*) FROM outbox)`).Scan(&locks, &outbox); err != nil {
			return fmt.Errorf("reading renames under way and the outbox: %w", err)
		}
		if done(st, locks == 0 && outbox == 0) {
			fmt.Fprintf(cfg.Out, "%s (after %s)\n", what, time.Since(t0).Round(time.Millisecond))
			return nil
		}
		if time.Since(last) > 5*time.Second {
			last = time.Now()
			var frozen, activated []int32
			for p, s := range st {
				if s.version < cfg.To && s.frozenTo != cfg.To {
					frozen = append(frozen, p)
				}
				if s.version < cfg.To {
					activated = append(activated, p)
				}
			}
			slices.Sort(frozen)
			slices.Sort(activated)
			fmt.Fprintf(cfg.Out, "waiting for %s: %s so far; partitions not frozen: %v; not activated: %v; renames under way: %d; outbox rows: %d (a projector must be running)\n",
				what, time.Since(t0).Round(time.Second), frozen, activated, locks, outbox)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(cfg.Poll):
		}
	}
}

// produce signs and writes recs to the claims topic, waiting for every
// acknowledgement.
func produce(ctx context.Context, cfg Config, recs []*kgo.Record) error {
	for _, r := range recs {
		r.Topic = cfg.Topics.Claims
		cfg.AdminKeys.Sign(r)
	}
	for len(recs) > 0 { // in chunks, so a million carried records do not all wait in the client's buffer
		n := min(len(recs), 10000)
		if err := cfg.Producer.ProduceSync(ctx, recs[:n]...).FirstErr(); err != nil {
			return err
		}
		recs = recs[n:]
	}
	return nil
}
