package projector

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/usernameregistry/registry/claims"
	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/projector/internal/fence"
	"github.com/usernameregistry/registry/projector/internal/projection"
)

// The SQL the projector runs. Every statement works on a whole batch (or
// a whole assignment) through arrays, never one row per round trip.
const (
	// sqlAdvance is the compare-and-set that fences zombies: it matches only
	// while this owner's epoch is current and nobody else advanced the
	// partition. It also locks the row for the rest of the transaction, so
	// a new owner's sqlAssign waits for this batch to commit or roll back.
	//
	// It works on every partition of a round at once and returns the
	// partitions that matched. Two members only share rows while one is a
	// zombie; should their locks ever deadlock, PostgreSQL aborts one
	// transaction, which is retried like any other fault.
	sqlAdvance = `
UPDATE claim_partitions c SET next_offset = v.next, updated_at = now()
FROM unnest($1::int[], $2::bigint[], $3::bigint[], $4::bigint[]) AS v(partition, epoch, prev, next)
WHERE c.partition = v.partition AND c.owner_epoch = v.epoch AND c.next_offset = v.prev
RETURNING c.partition`

	sqlPosition = `SELECT next_offset, owner_epoch FROM claim_partitions WHERE partition = $1`

	sqlPositions = `SELECT partition, next_offset FROM claim_partitions WHERE partition = ANY($1::int[])`

	// sqlLoadRequests finds the ledger entries of a round's request_ids;
	// the caller keeps those in the round's partitions. (A condition on
	// claim_partition here would let a generic plan scan the whole
	// partition's index, which grows with the ledger.)
	sqlLoadRequests = `
SELECT request_id::text, claim_partition, user_id, username, decision FROM requests
WHERE request_id = ANY($1::uuid[])`

	sqlLoadHolders = `
SELECT canonical, key, username, user_id::text, request_id::text, claim_partition, claim_offset, registered_at,
    coalesce(granted_under, 0), grandfathered, invalid, coalesce(policy_version, 0)
FROM usernames WHERE key = ANY($1::text[])`

	// sqlLoadPartitionPolicy reads the policy state of a round's
	// partitions (a partition without a row, or never upgraded, decides
	// under the registry's initial version).
	sqlLoadPartitionPolicy = `
SELECT partition, coalesce(policy_version, (SELECT coalesce(initial_version, version) FROM username_policy), 0),
    policy_version IS NOT NULL, coalesce(frozen_to, 0), staged
FROM claim_partitions WHERE partition = ANY($1::int[])`

	sqlPartitionPolicy = `
SELECT coalesce((SELECT policy_version FROM claim_partitions WHERE partition = $1),
    (SELECT coalesce(initial_version, version) FROM username_policy), 0),
    EXISTS (SELECT 1 FROM claim_partitions WHERE partition = $1 AND policy_version IS NOT NULL)`

	sqlSavePartitionPolicy = `
UPDATE claim_partitions c SET policy_version = nullif(v.version, 0), frozen_to = nullif(v.frozen, 0), staged = v.staged
FROM unnest($1::int[], $2::int[], $3::int[], $4::int[]) AS v(partition, version, frozen, staged)
WHERE c.partition = v.partition`

	sqlStageCarried = `
INSERT INTO carried (partition, request_id, kind, key, canonical, username, user_id, orig_request, claim_offset, at, granted_under, invalid)
SELECT * FROM unnest($1::int[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::uuid[], $8::uuid[], $9::bigint[], $10::timestamptz[], $11::int[], $12::bool[])`

	// The activation of a partition (State.Activate in SQL): its rows of
	// the old version go (usernames by their claim_partition; holds,
	// reservations and locks by their keys, which the projector picks by
	// murmur2), the staged ones come in.
	sqlActivateDropHolders = `DELETE FROM usernames WHERE claim_partition = $1`
	sqlActivateDropKeyed   = `
WITH h AS (DELETE FROM holds WHERE key = ANY($1::text[])), r AS (DELETE FROM reservations WHERE key = ANY($1::text[]))
DELETE FROM rename_locks WHERE key = ANY($1::text[])`
	sqlActivateHolders = `
INSERT INTO usernames (canonical, key, username, user_id, request_id, claim_partition, claim_offset, registered_at, granted_under, grandfathered, invalid, policy_version)
SELECT canonical, key, username, user_id, orig_request, partition, claim_offset, at, granted_under,
    count(*) OVER (PARTITION BY key) > 1 OR kind = 'shadow', invalid, $2
FROM carried WHERE partition = $1 AND kind IN ('holder', 'shadow')`
	sqlActivateHolds = `
INSERT INTO holds (key, canonical, user_id, request_id, held_until)
SELECT DISTINCT ON (key) key, canonical, user_id, orig_request, at FROM carried WHERE partition = $1 AND kind = 'hold'
ORDER BY key, at DESC, canonical COLLATE "C"`
	sqlActivateReservations = `
INSERT INTO reservations (key, canonical, request_id, reserved_at)
SELECT DISTINCT ON (key) key, canonical, orig_request, at FROM carried WHERE partition = $1 AND kind = 'reservation'
ORDER BY key, canonical COLLATE "C"`
	sqlActivateClear = `DELETE FROM carried WHERE partition = $1`
	sqlKeyedKeys     = `SELECT key FROM holds UNION SELECT key FROM reservations UNION SELECT key FROM rename_locks`

	sqlInsertOutbox = `
INSERT INTO outbox (claim_partition, key, event_type, value, topic)
SELECT p, k, t, v, tp FROM unnest($1::int[], $2::bytea[], $3::text[], $4::bytea[], $5::text[]) WITH ORDINALITY AS o(p, k, t, v, tp, n)
ORDER BY n
RETURNING id`

	sqlPendingOutbox = `SELECT id, key, event_type, value, topic FROM outbox WHERE claim_partition = $1 ORDER BY id`

	// The rest of a partition's state that a round's keys can depend on.
	sqlLoadHolds        = `SELECT key, canonical, user_id::text, request_id::text, held_until FROM holds WHERE key = ANY($1::text[])`
	sqlLoadReservations = `SELECT key, canonical, request_id::text, reserved_at FROM reservations WHERE key = ANY($1::text[])`
	sqlLoadLocks        = `SELECT key, canonical, user_id::text, request_id::text, to_name FROM rename_locks WHERE key = ANY($1::text[])`

	sqlDeleteOutbox = `DELETE FROM outbox WHERE id = ANY($1::bigint[])`

	sqlOutboxBacklog = `SELECT count(*) FROM outbox`

	// sqlLedgerDecisions picks, for each request_id decided in several
	// partitions, the earliest decision that is not invalid, else the
	// earliest: an invalid decision decides no name, so it must not hide
	// the one that did (docs/design.md, "A request_id decided in several
	// partitions").
	sqlLedgerDecisions = `
SELECT DISTINCT ON (request_id) request_id::text, decision FROM requests
WHERE request_id = ANY($1::uuid[])
ORDER BY request_id, reason IS NOT DISTINCT FROM 'invalid', claim_partition, claim_offset`

	sqlHolder = `
SELECT username, canonical, user_id::text, request_id::text, registered_at FROM usernames WHERE canonical = $1`

	sqlHold     = `SELECT canonical, held_until FROM holds WHERE key = $1`
	sqlReserved = `SELECT canonical FROM reservations WHERE key = $1`

	sqlHolderOfKey = `
SELECT username, canonical, user_id::text, request_id::text, registered_at,
    coalesce(granted_under, (SELECT coalesce(initial_version, version) FROM username_policy)), grandfathered
FROM usernames WHERE key = $1 ORDER BY canonical COLLATE "C"`

	sqlPolicy = `
INSERT INTO username_policy (version) VALUES ($1)
ON CONFLICT (singleton) DO UPDATE SET version = username_policy.version
RETURNING version`

	sqlLayout = `
INSERT INTO topic_layout (topic, partitions) VALUES ($1, $2)
ON CONFLICT (topic) DO UPDATE SET partitions = topic_layout.partitions
RETURNING partitions`
)

// ErrFenced means a newer owner holds the partition: this projector's
// write was refused and it must stop writing the partition.
var ErrFenced = errors.New("partition fenced by a newer owner")

// assignment is a partition's stored position after an epoch bump.
type assignment struct {
	partition  int32
	nextOffset int64
	epoch      int64
}

// assign bumps the epoch of every newly assigned partition (creating its
// row on first sight), which fences the previous owner, and returns where
// each resumes. The bump is fence.Bump, the one rebuild's swap also uses.
func assign(ctx context.Context, pool *pgxpool.Pool, partitions []int32) ([]assignment, error) {
	ps, err := fence.Bump(ctx, pool, partitions, nil)
	if err != nil {
		return nil, err
	}
	as := make([]assignment, len(ps))
	for i, p := range ps {
		as[i] = assignment{partition: p.Partition, nextOffset: p.NextOffset, epoch: p.Epoch}
	}
	return as, nil
}

// position reads a partition's stored progress and epoch, used after a
// fault left the outcome of a commit unknown.
func position(ctx context.Context, pool *pgxpool.Pool, partition int32) (nextOffset, epoch int64, err error) {
	err = pool.QueryRow(ctx, sqlPosition, partition).Scan(&nextOffset, &epoch)
	if err != nil {
		return 0, 0, fmt.Errorf("reading stored position of partition %d: %w", partition, err)
	}
	return nextOffset, epoch, nil
}

// recordLayout stores the partition count on first run and returns the
// stored one, so a changed topic is noticed by every later start.
func recordLayout(ctx context.Context, pool *pgxpool.Pool, claimsTopic string, partitions int32) (int32, error) {
	var stored int32
	err := pool.QueryRow(ctx, sqlLayout, claimsTopic, partitions).Scan(&stored)
	if err != nil {
		return 0, fmt.Errorf("recording topic layout: %w", err)
	}
	return stored, nil
}

// recordPolicy stores the username policy version on a database's first
// run and returns the stored one (migration 002 records version 1 for a
// database that already held version-1 data).
func recordPolicy(ctx context.Context, pool *pgxpool.Pool, version int) (int, error) {
	var stored int
	if err := pool.QueryRow(ctx, sqlPolicy, version).Scan(&stored); err != nil {
		return 0, fmt.Errorf("recording the username policy version: %w", err)
	}
	return stored, nil
}

// PolicyVersion returns the username policy version the deployment decides
// under, as recorded in its database, recording username.Latest when none
// is yet (a new registry). The API and the projector both use it, so they
// never decide and claim under different versions.
func PolicyVersion(ctx context.Context, pool *pgxpool.Pool) (int, error) {
	return recordPolicy(ctx, pool, username.Latest)
}

// RequirePolicyVersion records version as the username policy of a new
// database, and fails, wrapping ErrPolicyVersion, when the database is
// recorded under another (a registry moves to a new version only with
// registry policy upgrade). A database that was created under version and
// upgraded since is not refused: the setting says what a new database
// starts with, and it did, so a process restarted after an upgrade with
// its configuration unchanged (REGISTRY_POLICY_VERSION=1) runs under the
// upgraded version rather than exiting.
func RequirePolicyVersion(ctx context.Context, pool *pgxpool.Pool, version int) error {
	if _, err := username.ForVersion(version); err != nil {
		return fmt.Errorf("%w: %w", ErrPolicyVersion, err)
	}
	stored, err := recordPolicy(ctx, pool, version)
	if err != nil {
		return err
	}
	if stored != version {
		var initial *int
		if err := pool.QueryRow(ctx, `SELECT coalesce(initial_version, version) FROM username_policy`).Scan(&initial); err != nil {
			return fmt.Errorf("reading the username policy version the database started under: %w", err)
		}
		if initial != nil && *initial == version && stored > version {
			return nil
		}
		return fmt.Errorf("%w: the database decides under username policy version %d, not %d (--policy-version applies to a new database; move a registry with registry policy upgrade)",
			ErrPolicyVersion, stored, version)
	}
	return nil
}

// loadStates reads the ledger entries and holders that a round's claims
// can depend on, in one round trip, into one state per partition.
func loadStates(ctx context.Context, tx pgx.Tx, bs []*batch) (map[int32]*projection.State, error) {
	states := make(map[int32]*projection.State, len(bs))
	var ids, keys []string
	var parts []int32
	for _, b := range bs {
		states[b.st.partition] = projection.NewState()
		parts = append(parts, b.st.partition)
		for i := range b.ins {
			ids = append(ids, b.ins[i].RequestID)
			if r := b.ins[i].Rename; r != nil && b.ins[i].Invalid == "" {
				ids = append(ids, r.RequestID) // step 3 reads the rename's first decision
			}
			if b.ins[i].Invalid == "" {
				keys = append(keys, b.ins[i].Name.Key)
			}
		}
	}
	q := &pgx.Batch{}
	q.Queue(sqlLoadPartitionPolicy, parts).Query(func(rows pgx.Rows) error {
		var part int32
		var v projection.State
		_, err := pgx.ForEachRow(rows, []any{&part, &v.Version, &v.Upgraded, &v.FrozenTo, &v.Staged}, func() error {
			st := states[part]
			st.Version, st.Upgraded, st.FrozenTo, st.Staged = v.Version, v.Upgraded, v.FrozenTo, v.Staged
			return nil
		})
		return err
	})
	q.Queue(bugSQL(sqlLoadRequests), ids).Query(func(rows pgx.Rows) error { return scanRequests(rows, states) })
	q.Queue(sqlLoadHolders, keys).Query(func(rows pgx.Rows) error { return scanHolders(rows, states) })
	byKey := keyPartitions(bs)
	q.Queue(sqlLoadHolds, keys).Query(func(rows pgx.Rows) error {
		return scanKeyed(rows, byKey, states, func(h *projection.Hold) []any {
			return []any{&h.Key, &h.Canonical, &h.UserID, &h.RequestID, &h.HeldUntil}
		}, func(st *projection.State, h *projection.Hold) { h.HeldUntil = h.HeldUntil.UTC(); st.Holds[h.Key] = h })
	})
	q.Queue(sqlLoadReservations, keys).Query(func(rows pgx.Rows) error {
		return scanKeyed(rows, byKey, states, func(r *projection.Reservation) []any {
			return []any{&r.Key, &r.Canonical, &r.RequestID, &r.ReservedAt}
		}, func(st *projection.State, r *projection.Reservation) {
			r.ReservedAt = r.ReservedAt.UTC()
			st.Reserved[r.Key] = r
		})
	})
	q.Queue(sqlLoadLocks, keys).Query(func(rows pgx.Rows) error {
		return scanKeyed(rows, byKey, states, func(l *projection.Lock) []any {
			return []any{&l.Key, &l.Canonical, &l.UserID, &l.RequestID, &l.To}
		}, func(st *projection.State, l *projection.Lock) { st.Locks[l.Key] = l })
	})
	if err := tx.SendBatch(ctx, q).Close(); err != nil {
		return nil, fmt.Errorf("loading ledger and holders: %w", err)
	}
	return states, nil
}

// keyPartitions maps each valid key of the round to its partition.
func keyPartitions(bs []*batch) map[string]int32 {
	m := map[string]int32{}
	for _, b := range bs {
		for i := range b.ins {
			if b.ins[i].Invalid == "" {
				m[b.ins[i].Name.Key] = b.st.partition
			}
		}
	}
	return m
}

// scanKeyed scans rows of a keyed table (holds, reservations, locks) into
// the states of their keys' partitions.
func scanKeyed[T any](rows pgx.Rows, byKey map[string]int32, states map[int32]*projection.State, dest func(*T) []any, put func(*projection.State, *T)) error {
	for rows.Next() {
		v := new(T)
		if err := rows.Scan(dest(v)...); err != nil {
			return err
		}
		key := *dest(v)[0].(*string)
		if part, ok := byKey[key]; ok {
			put(states[part], v)
		}
	}
	return rows.Err()
}

// scanRequests puts ledger entries into their partition's state, and
// skips those of partitions outside the round.
func scanRequests(rows pgx.Rows, states map[int32]*projection.State) error {
	for rows.Next() {
		e := &projection.Entry{}
		var part int32
		if err := rows.Scan(&e.RequestID, &part, &e.UserID, &e.Username, &e.Value); err != nil {
			return err
		}
		st := states[part]
		if st == nil {
			continue
		}
		e.Decision = &events.Decision{}
		if err := json.Unmarshal(e.Value, e.Decision); err != nil {
			return fmt.Errorf("stored decision for %s: %w", e.RequestID, err)
		}
		st.Requests[e.RequestID] = e
	}
	return rows.Err()
}

// scanHolders puts holders into the state of their name's partition (a
// key belongs to exactly one partition).
func scanHolders(rows pgx.Rows, states map[int32]*projection.State) error {
	for rows.Next() {
		h := &projection.Holder{}
		if err := rows.Scan(&h.Canonical, &h.Key, &h.Username, &h.UserID, &h.RequestID, &h.Partition, &h.Offset, &h.RegisteredAt,
			&h.GrantedUnder, &h.Grandfathered, &h.Invalid, &h.KeyVersion); err != nil {
			return err
		}
		h.RegisteredAt = h.RegisteredAt.UTC()
		st := states[h.Partition]
		switch {
		case st == nil:
		case h.Grandfathered:
			st.Members[h.Key] = append(st.Members[h.Key], h)
			slices.SortFunc(st.Members[h.Key], func(a, b *projection.Holder) int { return strings.Compare(a.Canonical, b.Canonical) })
		default:
			st.Holders[h.Key] = h
		}
	}
	return rows.Err()
}

// writes gathers a round's changes. Ledger rows and outbox rows are
// written in decision order; the keyed tables (usernames, holds,
// reservations, rename_locks) are written as the round's net effect: the
// keys a decision touched get their final state from the partition's
// State after the round, which the fold kept in order.
type writes struct {
	entries  []*projection.Entry // new ledger rows
	replaced []*projection.Entry // ledger rows a rename's final decision replaces
	outbox   []outboxRow         // every decision, to publish, and the renames' next steps; ids are filled in by the insert

	holders, holds, reserved, locks map[string]*projection.State // keys touched, and their partition's state
	dropped                         []string                     // keys whose holder left during the round

	// The policy upgrade: partitions whose policy state changed, carried
	// entries staged, and partitions activated (their writes come last).
	policy         map[int32]*projection.State
	staged         []stagedRow
	activations    []activation
	activationKeys map[int32][]string // keys of holds, reservations and locks in each activated partition
}

// activation is a partition activating a policy version in a round.
type activation struct {
	partition int32
	version   int
}

// stagedRow is a carried entry to stage, with its partition.
type stagedRow struct {
	partition int32
	offset    int64
	s         *projection.Staged
}

// add records what deciding in (in state st) gave: the decision to
// publish, a rename's next step, and the rows of the change it folded into
// the projection.
func (w *writes) add(st *projection.State, in *projection.Claim, out projection.Outcome) {
	w.outbox = append(w.outbox, outboxRow{partition: in.Partition, key: in.Key, eventType: out.Decision.Type(), value: out.Value, topic: outboxRegistrations})
	if n := out.Next; n != nil {
		w.outbox = append(w.outbox, outboxRow{partition: in.Partition, key: n.Key, eventType: events.TypeOf(n), value: n.Value, topic: outboxClaims})
	}
	c := out.Change
	if e := c.Entry; e != nil && c.ReplaceEntry {
		w.replaced = append(w.replaced, e)
	} else if e != nil {
		w.entries = append(w.entries, e)
	}
	if w.holders == nil {
		w.holders, w.holds, w.reserved, w.locks = map[string]*projection.State{}, map[string]*projection.State{}, map[string]*projection.State{}, map[string]*projection.State{}
	}
	touch := func(m map[string]*projection.State, yes bool) {
		if yes {
			m[c.Key] = st
		}
	}
	touch(w.holders, c.Holder != nil || c.DropHolder)
	touch(w.holds, c.Hold != nil || c.DropHold)
	touch(w.reserved, c.Reservation != nil || c.DropReservation)
	touch(w.locks, c.Lock != nil || c.DropLock)
	if c.DropHolder {
		w.dropped = append(w.dropped, c.Key)
	}
	if c.Freeze != 0 || c.Stage != nil || c.Activate != 0 {
		if w.policy == nil {
			w.policy = map[int32]*projection.State{}
		}
		w.policy[in.Partition] = st
	}
	if c.Stage != nil {
		w.staged = append(w.staged, stagedRow{partition: in.Partition, offset: in.Offset, s: c.Stage})
	}
	if c.Activate != 0 {
		w.activations = append(w.activations, activation{partition: in.Partition, version: c.Activate})
	}
}

// queue adds the round's writes to b, each one statement over column
// arrays; the outbox ids come back into w.outbox. Holders are deleted
// only where a decision dropped one, so a plain win is a plain insert and
// the UNIQUE constraints still catch a second holder.
func (w *writes) queue(b *pgx.Batch) {
	if len(w.entries) > 0 {
		b.Queue(bugSQL(projection.SQLInsertRequests), projection.RequestArrays(w.entries)...)
	}
	if len(w.replaced) > 0 {
		b.Queue(projection.SQLReplaceRequests, projection.RequestArrays(w.replaced)...)
	}
	if len(w.dropped) > 0 {
		b.Queue(`DELETE FROM usernames WHERE key = ANY($1::text[])`, w.dropped)
	}
	var holders []*projection.Holder
	for _, k := range sortedKeys(w.holders) {
		if h := w.holders[k].Holders[k]; h != nil {
			holders = append(holders, h)
		}
		holders = append(holders, w.holders[k].Members[k]...)
	}
	if len(holders) > 0 {
		b.Queue(projection.SQLInsertHolders, projection.HolderArrays(holders)...)
	}
	w.queueKeyed(b)
	w.queuePolicy(b)
	n := len(w.outbox)
	parts, keys, types, values, topics := make([]int32, n), make([][]byte, n), make([]string, n), make([][]byte, n), make([]string, n)
	for i, o := range w.outbox {
		parts[i], keys[i], types[i], values[i], topics[i] = o.partition, o.key, o.eventType, o.value, o.topic
	}
	b.Queue(sqlInsertOutbox, parts, keys, types, values, topics).Query(func(rows pgx.Rows) error {
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err == nil && len(ids) != len(w.outbox) {
			err = fmt.Errorf("outbox insert returned %d ids for %d rows", len(ids), len(w.outbox))
		}
		for i := range ids {
			w.outbox[i].id = ids[i]
		}
		return err
	})
}

// queueKeyed writes the final holds, reservations and locks of the keys
// the round touched: delete, then insert what remains.
func (w *writes) queueKeyed(b *pgx.Batch) {
	if len(w.holds) > 0 {
		keys := sortedKeys(w.holds)
		b.Queue(`DELETE FROM holds WHERE key = ANY($1::text[])`, keys)
		var ks, canon, users, reqs []string
		var until []time.Time
		for _, k := range keys {
			if h := w.holds[k].Holds[k]; h != nil {
				ks, canon, users, reqs, until = append(ks, k), append(canon, h.Canonical), append(users, h.UserID), append(reqs, h.RequestID), append(until, h.HeldUntil)
			}
		}
		b.Queue(`INSERT INTO holds (key, canonical, user_id, request_id, held_until) SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::uuid[], $5::timestamptz[])`, ks, canon, users, reqs, until)
	}
	if len(w.reserved) > 0 {
		keys := sortedKeys(w.reserved)
		b.Queue(`DELETE FROM reservations WHERE key = ANY($1::text[])`, keys)
		var ks, canon, reqs []string
		var at []time.Time
		for _, k := range keys {
			if r := w.reserved[k].Reserved[k]; r != nil {
				ks, canon, reqs, at = append(ks, k), append(canon, r.Canonical), append(reqs, r.RequestID), append(at, r.ReservedAt)
			}
		}
		b.Queue(`INSERT INTO reservations (key, canonical, request_id, reserved_at) SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::timestamptz[])`, ks, canon, reqs, at)
	}
	if len(w.locks) > 0 {
		keys := sortedKeys(w.locks)
		b.Queue(`DELETE FROM rename_locks WHERE key = ANY($1::text[])`, keys)
		var ks, canon, users, reqs, tos []string
		for _, k := range keys {
			if l := w.locks[k].Locks[k]; l != nil {
				ks, canon, users, reqs, tos = append(ks, k), append(canon, l.Canonical), append(users, l.UserID), append(reqs, l.RequestID), append(tos, l.To)
			}
		}
		b.Queue(`INSERT INTO rename_locks (key, canonical, user_id, request_id, to_name) SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::uuid[], $5::text[])`, ks, canon, users, reqs, tos)
	}
}

func sortedKeys(m map[string]*projection.State) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Store answers the API's read queries from the projection.
type Store struct {
	pool *pgxpool.Pool

	// Ledger lookups are coalesced: while one query is in flight, the
	// request_ids asked for meanwhile wait and go together in the next, so
	// under load a lookup costs a share of a query instead of one each,
	// and at low load it costs no waiting at all.
	mu       sync.Mutex
	pending  []*lookup
	inFlight bool
}

type lookup struct {
	requestID string
	done      chan struct{}
	value     []byte
	err       error
}

// maxLookups bounds the request_ids of one coalesced query.
const maxLookups = 512

// NewStore returns a Store reading through pool.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Decision returns the ledger's decision for requestID, or nil when the
// request_id has none yet.
func (s *Store) Decision(ctx context.Context, requestID string) (*events.Decision, error) {
	if _, err := uuid.Parse(requestID); err != nil { // would fail the others' query
		return nil, fmt.Errorf("looking up request %q: %w", requestID, err)
	}
	l := &lookup{requestID: requestID, done: make(chan struct{})}
	s.mu.Lock()
	s.pending = append(s.pending, l)
	lead := !s.inFlight
	s.inFlight = true
	s.mu.Unlock()
	if lead {
		// On its own goroutine, so this caller still gives up when its own
		// ctx ends: the queries are bounded apart from it (see lookups).
		go s.lookups(ctx)
	}
	select {
	case <-l.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("looking up request %s: %w", requestID, ctx.Err())
	}
	if l.err != nil || l.value == nil {
		return nil, l.err
	}
	d := &events.Decision{}
	if err := json.Unmarshal(l.value, d); err != nil {
		return nil, fmt.Errorf("stored decision for %s: %w", requestID, err)
	}
	return d, nil
}

// lookups runs queries until nothing is pending. Its caller's own lookup
// is in the first one. The queries do not end with the caller's context,
// since other callers wait on them; each is bounded on its own.
func (s *Store) lookups(ctx context.Context) {
	ctx = context.WithoutCancel(ctx)
	for {
		s.mu.Lock()
		n := min(len(s.pending), maxLookups)
		if n == 0 {
			s.inFlight = false
			s.mu.Unlock()
			return
		}
		batch := s.pending[:n:n]
		s.pending = s.pending[n:]
		s.mu.Unlock()
		s.query(ctx, batch)
	}
}

func (s *Store) query(ctx context.Context, batch []*lookup) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ids := make([]string, len(batch))
	for i, l := range batch {
		ids[i] = l.requestID
	}
	found := map[string][]byte{}
	rows, err := s.pool.Query(ctx, sqlLedgerDecisions, ids)
	if err == nil {
		var id string
		var value []byte
		_, err = pgx.ForEachRow(rows, []any{&id, &value}, func() error {
			found[id] = value
			return nil
		})
	}
	for _, l := range batch {
		if err != nil {
			l.err = fmt.Errorf("looking up request %s: %w", l.requestID, err)
		}
		l.value = found[l.requestID]
		close(l.done)
	}
}

// Holder returns who holds canonical, or nil when nobody does.
func (s *Store) Holder(ctx context.Context, canonical string) (*claims.Registration, error) {
	return s.holder(ctx, sqlHolder, canonical)
}

// PolicyVersion is PolicyVersion on the store's database.
func (s *Store) PolicyVersion(ctx context.Context) (int, error) { return PolicyVersion(ctx, s.pool) }

// HolderOfKey returns who holds the name with the given key, or nil when
// nobody does.
//
// For a key held by a grandfathered group it returns the first member,
// with every member in Members.
func (s *Store) HolderOfKey(ctx context.Context, key string) (*claims.Registration, error) {
	rows, err := s.pool.Query(ctx, sqlHolderOfKey, key)
	if err != nil {
		return nil, fmt.Errorf("looking up the holder of %q: %w", key, err)
	}
	var r claims.Registration
	regs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (claims.Registration, error) {
		err := row.Scan(&r.Username, &r.Canonical, &r.UserID, &r.RequestID, &r.RegisteredAt, &r.HeldUnderPolicy, &r.Grandfathered)
		r.RegisteredAt = r.RegisteredAt.UTC()
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("looking up the holder of %q: %w", key, err)
	}
	if len(regs) == 0 {
		return nil, nil
	}
	first := regs[0]
	if len(regs) > 1 {
		first.Members = regs
	}
	return &first, nil
}

func (s *Store) holder(ctx context.Context, query, arg string) (*claims.Registration, error) {
	r := &claims.Registration{}
	err := s.pool.QueryRow(ctx, query, arg).Scan(&r.Username, &r.Canonical, &r.UserID, &r.RequestID, &r.RegisteredAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("looking up the holder of %q: %w", arg, err)
	}
	r.RegisteredAt = r.RegisteredAt.UTC()
	return r, nil
}

// NameState reports the hold and runtime reservation of the name with
// partition key key.
func (s *Store) NameState(ctx context.Context, key string) (claims.NameState, error) {
	var st claims.NameState
	var until time.Time
	err := s.pool.QueryRow(ctx, sqlHold, key).Scan(&st.HeldCanonical, &until)
	switch {
	case err == nil:
		until = until.UTC()
		st.HeldUntil = &until
	case !errors.Is(err, pgx.ErrNoRows):
		return st, fmt.Errorf("looking up the hold of %q: %w", key, err)
	}
	var canon string
	err = s.pool.QueryRow(ctx, sqlReserved, key).Scan(&canon)
	switch {
	case err == nil:
		st.Reserved = true
	case !errors.Is(err, pgx.ErrNoRows):
		return st, fmt.Errorf("looking up the reservation of %q: %w", key, err)
	}
	return st, nil
}

// CarriedInvalid reports whether a policy upgrade carried a name its
// policy refuses, with this key and canonical form, to a holder who still
// holds it (claims.ClientConfig.CarriedInvalid).
func (s *Store) CarriedInvalid(ctx context.Context, key, canonical string) (bool, error) {
	var held bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM usernames WHERE key = $1 AND canonical = $2 AND invalid)`, key, canonical).Scan(&held)
	if err != nil {
		return false, fmt.Errorf("looking up the carried name %q: %w", canonical, err)
	}
	return held, nil
}

// UpgradingTo reports the username policy version a policy upgrade under
// way moves the registry to, or 0 when none is.
func (s *Store) UpgradingTo(ctx context.Context) (int, error) {
	var to int
	err := s.pool.QueryRow(ctx, `SELECT coalesce(upgrading_to, 0) FROM username_policy`).Scan(&to)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading whether a policy upgrade is under way: %w", err)
	}
	return to, nil
}

// Ping checks the database answers, for readiness.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// queuePolicy writes the round's policy upgrade changes: carried entries
// staged, each changed partition's policy state, and the activations,
// after every other write of the round (an activation is the last record
// of its partition's batch, see Projector.attempt).
func (w *writes) queuePolicy(b *pgx.Batch) {
	if n := len(w.staged); n > 0 {
		parts, ids, kinds, keys, canon, names := make([]int32, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		users, origs, offsets, ats := make([]*string, n), make([]string, n), make([]int64, n), make([]time.Time, n)
		granted, invalid := make([]int32, n), make([]bool, n)
		for i, r := range w.staged {
			parts[i], ids[i], offsets[i] = r.partition, r.s.RequestID, r.offset
			switch s := r.s; {
			case s.Holder != nil:
				h := s.Holder
				kinds[i], keys[i], canon[i], names[i], users[i], origs[i], ats[i] = events.CarryHolder, h.Key, h.Canonical, h.Username, &h.UserID, h.RequestID, h.RegisteredAt
				if h.Grandfathered { // staged holders are members only as shadows
					kinds[i] = events.CarryShadow
				}
				granted[i], invalid[i] = int32(h.GrantedUnder), h.Invalid
			case s.Hold != nil:
				h := s.Hold
				kinds[i], keys[i], canon[i], users[i], origs[i], ats[i] = events.CarryHold, h.Key, h.Canonical, &h.UserID, h.RequestID, h.HeldUntil
			case s.Reservation != nil:
				v := s.Reservation
				kinds[i], keys[i], canon[i], origs[i], ats[i] = events.CarryReservation, v.Key, v.Canonical, v.RequestID, v.ReservedAt
			}
			names[i] = cmp.Or(names[i], canon[i])
			granted[i] = max(granted[i], 1)
		}
		b.Queue(sqlStageCarried, parts, ids, kinds, keys, canon, names, users, origs, offsets, ats, granted, invalid)
	}
	if len(w.policy) > 0 {
		var parts, versions, frozen, staged []int32
		for part, st := range w.policy {
			v := int32(0)
			if st.Upgraded {
				v = int32(st.Version)
			}
			parts, versions, frozen, staged = append(parts, part), append(versions, v), append(frozen, int32(st.FrozenTo)), append(staged, int32(st.Staged))
		}
		b.Queue(sqlSavePartitionPolicy, parts, versions, frozen, staged)
	}
	for _, a := range w.activations {
		part := a.partition
		b.Queue(sqlActivateDropHolders, part)
		b.Queue(sqlActivateDropKeyed, w.activationKeys[part])
		b.Queue(sqlActivateHolders, part, a.version)
		b.Queue(sqlActivateHolds, part)
		b.Queue(sqlActivateReservations, part)
		b.Queue(sqlActivateClear, part)
	}
}

// loadActivationKeys finds, for a round with activations, the keys of
// holds, reservations and locks in each activated partition (by murmur2,
// as records are partitioned), the round's own included.
func (w *writes) loadActivationKeys(ctx context.Context, tx pgx.Tx, partitions int) error {
	if len(w.activations) == 0 {
		return nil
	}
	rows, err := tx.Query(ctx, sqlKeyedKeys)
	if err != nil {
		return fmt.Errorf("reading the keys of holds, reservations and locks for an activation: %w", err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("reading the keys of holds, reservations and locks for an activation: %w", err)
	}
	for _, m := range []map[string]*projection.State{w.holds, w.reserved, w.locks} {
		for k := range m {
			keys = append(keys, k)
		}
	}
	w.activationKeys = map[int32][]string{}
	for _, a := range w.activations {
		w.activationKeys[a.partition] = []string{}
	}
	for _, k := range keys {
		part := events.Partition([]byte(k), partitions)
		if ks, ok := w.activationKeys[part]; ok {
			w.activationKeys[part] = append(ks, k)
		}
	}
	return nil
}
