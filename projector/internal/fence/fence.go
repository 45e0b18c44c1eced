// Package fence holds the zombie fence's one write: bumping the owner
// epoch of claims partitions in claim_partitions. A projector bumps the
// epochs of the partitions the group assigns it, and `rebuild --swap`
// bumps every partition's as it moves the rebuilt projection in; a
// projector whose compare-and-set then names an older epoch matches no row
// and stops writing (see projector/doc.go, "Fencing, walked through").
// Both call Bump, so there is one definition of what a bump does.
package fence

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Querier is what Bump runs on: a pool, a connection or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Position is a partition's stored progress after a bump.
type Position struct {
	Partition  int32
	NextOffset int64 // first claims offset not yet decided
	Epoch      int64 // the owner epoch now in force
}

// sqlBump creates the row of a partition seen for the first time (epoch
// 1) and otherwise adds one to its epoch. With $3 set it also moves
// next_offset to $2's value (a swap installs rebuilt positions); otherwise
// the stored next_offset stays (an assignment resumes there), and $2 only
// seeds new rows.
const sqlBump = `
INSERT INTO claim_partitions (partition, next_offset, owner_epoch)
SELECT p, n, 1 FROM unnest($1::int[], $2::bigint[]) AS u(p, n)
ON CONFLICT (partition) DO UPDATE
SET owner_epoch = claim_partitions.owner_epoch + 1, updated_at = now(),
    next_offset = CASE WHEN $3 THEN EXCLUDED.next_offset ELSE claim_partitions.next_offset END
RETURNING partition, next_offset, owner_epoch`

// Bump bumps the owner epoch of each partition in parts and returns their
// positions, in no particular order. With next nil, each partition keeps
// its stored next offset (0 for a new row); otherwise next[i] becomes
// parts[i]'s next offset. Run inside a transaction that holds the rows
// (swap), the bump takes effect at commit; a projector batch in flight
// holds its row until it commits, so a bump waits for it.
func Bump(ctx context.Context, q Querier, parts []int32, next []int64) ([]Position, error) {
	set := next != nil
	if !set {
		next = make([]int64, len(parts))
	}
	if len(next) != len(parts) {
		return nil, fmt.Errorf("bumping owner epochs: %d offsets for %d partitions", len(next), len(parts))
	}
	rows, err := q.Query(ctx, sqlBump, parts, next, set)
	if err != nil {
		return nil, fmt.Errorf("bumping owner epochs of partitions %v: %w", parts, err)
	}
	ps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Position, error) {
		var p Position
		return p, r.Scan(&p.Partition, &p.NextOffset, &p.Epoch)
	})
	if err != nil {
		return nil, fmt.Errorf("bumping owner epochs of partitions %v: %w", parts, err)
	}
	return ps, nil
}
