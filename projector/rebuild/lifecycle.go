package rebuild

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/projector/internal/projection"
)

// keyed gathers what the decisions of names that change hands do beyond
// adding rows: holders that leave, ledger rows a rename's final decision
// replaces, and the holds, runtime reservations and rename locks. Each
// Change sets or drops a key's hold, reservation or lock, so the last
// change of a key is its final state, whatever came before; a key lives
// in one partition, whose decisions arrive in order.
type keyed struct {
	holderDrops map[[2]string]int64 // (key, canonical) -> claim offset of the last decision that dropped that holder
	replaced    [][2]any            // (request_id, claim_partition) of ledger rows replaced
	holds       map[string]*projection.Hold
	reserved    map[string]*projection.Reservation
	locks       map[string]*projection.Lock
	touched     map[string][]string // table -> keys

	// The policy upgrade (projection upgrade.go): each partition's policy
	// state, the entries staged and not yet activated, and per activated
	// partition the offset below which its rows are of the old version
	// (its first carried entry's, or the activation's).
	partitions int
	policy     map[int32]*partitionPolicy
	staged     map[int32][]stagedAt
	cuts       map[int32]int64
}

type partitionPolicy struct{ version, frozen, staged int }

type stagedAt struct {
	offset int64
	s      *projection.Staged
}

func newKeyed(partitions int) *keyed {
	return &keyed{holderDrops: map[[2]string]int64{}, holds: map[string]*projection.Hold{},
		reserved: map[string]*projection.Reservation{}, locks: map[string]*projection.Lock{}, touched: map[string][]string{},
		partitions: partitions, policy: map[int32]*partitionPolicy{}, staged: map[int32][]stagedAt{}, cuts: map[int32]int64{}}
}

// add records what decision d's change c does beyond its rows, and
// returns the usernames rows an activation makes live (the carried
// holders of its partition), for the caller to load with the others.
func (k *keyed) add(d *events.Decision, c projection.Change) ([][]any, error) {
	if c.DropHolder {
		k.holderDrops[[2]string{c.Key, c.DropCanonical}] = d.ClaimOffset
	}
	if c.Freeze != 0 || c.Stage != nil || c.Activate != 0 {
		return k.upgrade(d, c)
	}
	return nil, k.addKeyed(d, c)
}

// upgrade records a policy upgrade decision: a freeze, a carried entry
// staged, or an activation, which replaces the partition's entries of the
// old version by the staged ones as State.Activate and the projector do.
func (k *keyed) upgrade(d *events.Decision, c projection.Change) ([][]any, error) {
	p := d.ClaimPartition
	pp := k.policy[p]
	if pp == nil {
		pp = &partitionPolicy{}
		k.policy[p] = pp
	}
	switch {
	case c.Freeze != 0:
		pp.frozen = c.Freeze
		return nil, nil
	case c.Stage != nil:
		pp.staged++
		k.staged[p] = append(k.staged[p], stagedAt{offset: d.ClaimOffset, s: c.Stage})
		return nil, nil
	}
	*pp = partitionPolicy{version: c.Activate}
	k.cuts[p] = d.ClaimOffset
	if st := k.staged[p]; len(st) > 0 {
		k.cuts[p] = st[0].offset
	}
	for _, m := range []map[string]bool{keysOf(k.holds), keysOf(k.reserved), keysOf(k.locks)} {
		for key := range m {
			if events.Partition([]byte(key), k.partitions) == p {
				for _, table := range []string{"holds", "reservations", "rename_locks"} {
					k.touch(table, key)
				}
				k.holds[key], k.reserved[key], k.locks[key] = nil, nil, nil
			}
		}
	}
	st := projection.NewState()
	for _, e := range k.staged[p] {
		st.StagedEntries = append(st.StagedEntries, e.s)
	}
	delete(k.staged, p)
	st.Activate(c.Activate)
	for key, h := range st.Holds {
		k.holds[key] = h
		k.touch("holds", key)
	}
	for key, r := range st.Reserved {
		k.reserved[key] = r
		k.touch("reservations", key)
	}
	var rows [][]any
	hs := make([]*projection.Holder, 0, len(st.Holders))
	for _, h := range st.Holders {
		hs = append(hs, h)
	}
	for _, ms := range st.Members {
		hs = append(hs, ms...)
	}
	for _, h := range hs {
		row, err := h.Row()
		if err != nil {
			return nil, err
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func keysOf[V any](m map[string]*V) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

func (k *keyed) addKeyed(d *events.Decision, c projection.Change) error {
	if c.ReplaceEntry {
		id, err := uuid.Parse(d.RequestID)
		if err != nil {
			return fmt.Errorf("request_id %q: %w", d.RequestID, err)
		}
		k.replaced = append(k.replaced, [2]any{[16]byte(id), d.ClaimPartition})
	}
	if c.Hold != nil || c.DropHold {
		k.holds[c.Key] = c.Hold
		k.touch("holds", c.Key)
	}
	if c.Reservation != nil || c.DropReservation {
		k.reserved[c.Key] = c.Reservation
		k.touch("reservations", c.Key)
	}
	if c.Lock != nil || c.DropLock {
		k.locks[c.Key] = c.Lock
		k.touch("rename_locks", c.Key)
	}
	return nil
}

func (k *keyed) touch(table, key string) {
	if !slices.Contains(k.touched[table], key) {
		k.touched[table] = append(k.touched[table], key)
	}
}

// live reports whether a holder row of key and canonical, won at offset
// in partition, survives the drops and activations gathered so far (a
// transfer's own row has the drop's offset).
func (k *keyed) live(key, canonical string, partition int32, offset int64) bool {
	if cut, ok := k.cuts[partition]; ok && offset < cut {
		return false
	}
	drop, ok := k.holderDrops[[2]string{key, canonical}]
	return !ok || offset >= drop
}

// write applies what was gathered to schema's tables in tx: holder rows
// dropped, replaced ledger rows (all but the latest of their request_id
// and partition) removed, and the touched keys' holds, reservations and
// locks set to their final state.
func (k *keyed) write(ctx context.Context, tx pgx.Tx, schema string) error {
	s := q(schema)
	b := &pgx.Batch{}
	if len(k.cuts) > 0 { // activations: the partition's rows of the old version go
		parts, cuts := make([]int32, 0, len(k.cuts)), make([]int64, 0, len(k.cuts))
		for p, cut := range k.cuts {
			parts, cuts = append(parts, p), append(cuts, cut)
		}
		b.Queue(`DELETE FROM `+s+`.usernames u USING unnest($1::int[], $2::bigint[]) AS a(p, cut) WHERE u.claim_partition = a.p AND u.claim_offset < a.cut`, parts, cuts)
	}
	if len(k.holderDrops) > 0 {
		keys, canon, offs := make([]string, 0, len(k.holderDrops)), make([]string, 0, len(k.holderDrops)), make([]int64, 0, len(k.holderDrops))
		for kc, off := range k.holderDrops {
			keys, canon, offs = append(keys, kc[0]), append(canon, kc[1]), append(offs, off)
		}
		b.Queue(`DELETE FROM `+s+`.usernames u USING unnest($1::text[], $2::text[], $3::bigint[]) AS d(key, canonical, off)
			WHERE u.key = d.key AND u.canonical = d.canonical AND u.claim_offset < d.off`, keys, canon, offs)
	}
	// A holder that a transfer put into a grandfathered group is a member
	// too (State.Apply does the same in memory).
	b.Queue(`UPDATE ` + s + `.usernames SET grandfathered = true WHERE NOT grandfathered AND key IN (SELECT key FROM ` + s + `.usernames WHERE grandfathered)`)
	k.queuePolicy(b, s)
	if len(k.replaced) > 0 {
		ids, parts := make([][16]byte, len(k.replaced)), make([]int32, len(k.replaced))
		for i, r := range k.replaced {
			ids[i], parts[i] = r[0].([16]byte), r[1].(int32)
		}
		b.Queue(`DELETE FROM `+s+`.requests r USING unnest($1::uuid[], $2::int[]) AS x(id, p)
			WHERE r.request_id = x.id AND r.claim_partition = x.p AND r.outcome = 'renaming'`, ids, parts)
	}
	for table, keys := range k.touched {
		b.Queue(`DELETE FROM `+s+`.`+pgx.Identifier{table}.Sanitize()+` WHERE key = ANY($1::text[])`, keys)
	}
	k.queueInserts(b, s)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("writing holds, reservations, locks and dropped holders: %w", err)
	}
	return nil
}

// queuePolicy writes each partition's policy state and the carried
// entries staged and not yet activated.
func (k *keyed) queuePolicy(b *pgx.Batch, s string) {
	for p, pp := range k.policy {
		b.Queue(`INSERT INTO `+s+`.claim_partitions (partition, policy_version, frozen_to, staged) VALUES ($1, nullif($2, 0), nullif($3, 0), $4)
			ON CONFLICT (partition) DO UPDATE SET policy_version = coalesce(excluded.policy_version, `+s+`.claim_partitions.policy_version),
			frozen_to = excluded.frozen_to, staged = excluded.staged`, p, pp.version, pp.frozen, pp.staged)
	}
	for p, es := range k.staged {
		for _, e := range es {
			var kind, key, canon, user, orig string
			var at time.Time
			granted, invalid := 1, false
			var username string
			switch v := e.s; {
			case v.Holder != nil:
				h := v.Holder
				kind, key, canon, user, orig, at, username, granted, invalid = events.CarryHolder, h.Key, h.Canonical, h.UserID, h.RequestID, h.RegisteredAt, h.Username, max(h.GrantedUnder, 1), h.Invalid
				if h.Grandfathered { // staged holders are members only as shadows
					kind = events.CarryShadow
				}
			case v.Hold != nil:
				h := v.Hold
				kind, key, canon, user, orig, at = events.CarryHold, h.Key, h.Canonical, h.UserID, h.RequestID, h.HeldUntil
			case v.Reservation != nil:
				r := v.Reservation
				kind, key, canon, orig, at = events.CarryReservation, r.Key, r.Canonical, r.RequestID, r.ReservedAt
			}
			var uid *string
			if user != "" {
				uid = &user
			}
			b.Queue(`INSERT INTO `+s+`.carried (partition, request_id, kind, key, canonical, username, user_id, orig_request, claim_offset, at, granted_under, invalid)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`, p, e.s.RequestID, kind, key, canon, cmp.Or(username, canon), uid, orig, e.offset, at, granted, invalid)
		}
	}
}

func (k *keyed) queueInserts(b *pgx.Batch, s string) {
	var hk, hc, hu, hr []string
	var ht []time.Time
	for key, h := range k.holds {
		if h != nil {
			hk, hc, hu, hr, ht = append(hk, key), append(hc, h.Canonical), append(hu, h.UserID), append(hr, h.RequestID), append(ht, h.HeldUntil)
		}
	}
	b.Queue(`INSERT INTO `+s+`.holds (key, canonical, user_id, request_id, held_until) SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::uuid[], $5::timestamptz[])`, hk, hc, hu, hr, ht)
	var rk, rc, rr []string
	var rt []time.Time
	for key, r := range k.reserved {
		if r != nil {
			rk, rc, rr, rt = append(rk, key), append(rc, r.Canonical), append(rr, r.RequestID), append(rt, r.ReservedAt)
		}
	}
	b.Queue(`INSERT INTO `+s+`.reservations (key, canonical, request_id, reserved_at) SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::timestamptz[])`, rk, rc, rr, rt)
	var lk, lc, lu, lr, lt []string
	for key, l := range k.locks {
		if l != nil {
			lk, lc, lu, lr, lt = append(lk, key), append(lc, l.Canonical), append(lu, l.UserID), append(lr, l.RequestID), append(lt, l.To)
		}
	}
	b.Queue(`INSERT INTO `+s+`.rename_locks (key, canonical, user_id, request_id, to_name) SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::uuid[], $5::text[])`, lk, lc, lu, lr, lt)
}

// liveRows keeps the catch-up's holder rows that survive the drops, and
// its ledger rows that are the latest of their request_id and partition.
func (k *keyed) liveRows(c *collector) {
	c.usernames = slices.DeleteFunc(c.usernames, func(row []any) bool {
		return !k.live(row[1].(string), row[0].(string), row[5].(int32), row[6].(int64))
	})
	last := map[[2]any]int{}
	for i, row := range c.requests {
		last[[2]any{row[0], row[1]}] = i
	}
	kept := c.requests[:0]
	for i, row := range c.requests {
		if last[[2]any{row[0], row[1]}] == i {
			kept = append(kept, row)
		}
	}
	c.requests = kept
}
