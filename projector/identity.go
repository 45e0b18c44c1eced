package projector

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/projector/internal/projection"
)

// sqlDecidedAt reports whether the ledger holds a decision for a request
// at or before an offset of a partition, or in another partition (a
// request_conflict decided here against a request_id first decided there
// adds no ledger row of its own).
const sqlDecidedAt = `
SELECT EXISTS (SELECT 1 FROM requests WHERE request_id = $1::uuid AND (claim_partition <> $2 OR claim_offset <= $3))`

// checkLastDecided compares, for each assigned partition that has decided
// anything, the record just below its stored next offset with the ledger:
// its request must have a decision at or before that offset. A broker that
// lost decided claims and had the offsets written again would otherwise
// pass the log-end check (the new claims refill the log past the stored
// offset) and the projector would resume above claims nobody decided. Only
// a lost tail whose last record is a retry of an already decided request
// escapes this check (a request decided elsewhere counts as decided:
// see sqlDecidedAt); the fetch-time checks (ErrDataLoss) remain.
func (p *Projector) checkLastDecided(ctx context.Context, as []assignment) error {
	want := map[int32]kgo.Offset{}
	for _, a := range as {
		if a.nextOffset > 0 {
			want[a.partition] = kgo.NewOffset().At(a.nextOffset - 1)
		}
	}
	if len(want) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(append(p.roleOptions("projector-check"),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{p.cfg.Topics.Claims: want}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
	if err != nil {
		return fmt.Errorf("creating identity check client: %w", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, p.cfg.AttemptTimeout)
	defer cancel()
	seen := map[int32]bool{}
	for len(seen) < len(want) {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("reading the last decided claims: %w", err)
		}
		var fatal error
		fs.EachError(func(_ string, part int32, err error) {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return
			}
			fatal = fmt.Errorf("reading the last decided claim of partition %d: %w", part, err)
		})
		if fatal != nil {
			return fatal
		}
		for _, r := range fs.Records() {
			if seen[r.Partition] {
				continue
			}
			stored := want[r.Partition].EpochOffset().Offset
			if r.Offset != stored {
				// A transactional producer's control record or an aborted
				// batch sits at that offset: nothing to compare.
				seen[r.Partition] = true
				continue
			}
			in := projection.Parse(r, p.rules)
			var ok bool
			if err := p.pool.QueryRow(ctx, sqlDecidedAt, ledgerID(&in), r.Partition, r.Offset).Scan(&ok); err != nil {
				return fmt.Errorf("checking the last decided claim of partition %d: %w", r.Partition, err)
			}
			if !ok {
				var err error
				if ok, err = p.answeredUnstored(ctx, r, &in); err != nil {
					return err
				}
			}
			if !ok {
				return fmt.Errorf("%w: claims partition %d: the record at offset %d (request %s) below the stored next offset was never decided: the broker lost decided claims and the offsets were written again; restore the broker's data or rebuild, never skip",
					ErrDataLoss, r.Partition, r.Offset, in.RequestID)
			}
			seen[r.Partition] = true
		}
	}
	return nil
}

// sqlPartitionUpgrade reads what makes a partition answer commands
// policy_upgrading without a ledger row: the version it is frozen for and
// the version an activation set.
const sqlPartitionUpgrade = `
SELECT coalesce(frozen_to, 0), coalesce(policy_version, 0) FROM claim_partitions WHERE partition = $1`

// answeredUnstored reports whether the record r (parsed as in) was, as the
// last decided record of its partition, answered policy_upgrading, which
// adds no ledger row: a command in a frozen partition, or one made under a
// version older than the one its partition activated (projection's
// upgradeGate). Without this, a projector assigned such a partition would
// take the missing row for lost claims and halt.
func (p *Projector) answeredUnstored(ctx context.Context, r *kgo.Record, in *projection.Claim) (bool, error) {
	var frozen, version int
	if err := p.pool.QueryRow(ctx, sqlPartitionUpgrade, r.Partition).Scan(&frozen, &version); err != nil {
		return false, fmt.Errorf("checking the last decided claim of partition %d: %w", r.Partition, err)
	}
	switch typ := events.TypeOf(r); {
	case typ == events.TypePolicyFreezing || typ == events.TypeHolderCarried || typ == events.TypePolicyActivating:
		return false, nil // always stored
	case frozen != 0:
		return true, nil
	case version != 0 && in.Version > 0 && in.Version < version:
		return true, nil
	}
	return false, nil
}

// ledgerID is the request_id under which the ledger keeps in's decision: a
// rename's last step (RenameFinishing) stores the rename's final decision
// under the rename's own request_id, replacing its first step's row; every
// other record's decision is stored under its own.
func ledgerID(in *projection.Claim) string {
	if in.Type == events.TypeRenameFinishing && in.Invalid == "" && in.Rename != nil {
		return in.Rename.RequestID
	}
	return in.RequestID
}
