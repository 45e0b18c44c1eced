package rebuild

import (
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
	holderDrops map[string]int64 // key -> claim offset of the last decision that dropped its holder
	replaced    [][2]any         // (request_id, claim_partition) of ledger rows replaced
	holds       map[string]*projection.Hold
	reserved    map[string]*projection.Reservation
	locks       map[string]*projection.Lock
	touched     map[string][]string // table -> keys
}

func newKeyed() *keyed {
	return &keyed{holderDrops: map[string]int64{}, holds: map[string]*projection.Hold{},
		reserved: map[string]*projection.Reservation{}, locks: map[string]*projection.Lock{}, touched: map[string][]string{}}
}

// add records what decision d's change c does beyond its rows.
func (k *keyed) add(d *events.Decision, c projection.Change) error {
	if c.DropHolder {
		k.holderDrops[c.Key] = d.ClaimOffset
	}
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

// live reports whether a holder row of key won at offset survives the
// drops gathered so far (a transfer's own row has the drop's offset).
func (k *keyed) live(key string, offset int64) bool {
	drop, ok := k.holderDrops[key]
	return !ok || offset >= drop
}

// write applies what was gathered to schema's tables in tx: holder rows
// dropped, replaced ledger rows (all but the latest of their request_id
// and partition) removed, and the touched keys' holds, reservations and
// locks set to their final state.
func (k *keyed) write(ctx context.Context, tx pgx.Tx, schema string) error {
	s := q(schema)
	b := &pgx.Batch{}
	if len(k.holderDrops) > 0 {
		keys, offs := make([]string, 0, len(k.holderDrops)), make([]int64, 0, len(k.holderDrops))
		for key, off := range k.holderDrops {
			keys, offs = append(keys, key), append(offs, off)
		}
		b.Queue(`DELETE FROM `+s+`.usernames u USING unnest($1::text[], $2::bigint[]) AS d(key, off) WHERE u.key = d.key AND u.claim_offset < d.off`, keys, offs)
	}
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
	c.usernames = slices.DeleteFunc(c.usernames, func(row []any) bool { return !k.live(row[1].(string), row[6].(int64)) })
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
