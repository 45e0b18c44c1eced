package baseline

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/usernameregistry/registry/claims/username"
)

// errDecided rolls back a transaction whose request_id turned out to have
// a decision already (a retry racing its original).
var errDecided = errors.New("request_id already decided")

// claimSafe decides c in one transaction at READ COMMITTED, the classic
// way: insert the holder row and let the UNIQUE constraints say whether
// this request won; otherwise read who holds the name. The decision is
// then stored under the request_id, whose PRIMARY KEY makes a racing retry
// wait for this transaction and then answer from what it stored.
func (s *store) claimSafe(ctx context.Context, c claim) (verdict, error) {
	var v verdict
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		if v, err = decideSafe(ctx, tx, c); err != nil {
			return err
		}
		recorded, err := recordRequest(ctx, tx, insertRequest, c, v)
		if err == nil && !recorded {
			// Roll back: whatever this transaction inserted belongs to a
			// decision that was not the first for its request_id.
			return errDecided
		}
		return err
	})
	if !errors.Is(err, errDecided) {
		return v, err
	}
	v, ok, err := storedDecision(ctx, s.pool, requestByID, c)
	if err == nil && !ok {
		err = fmt.Errorf("request %s: its stored decision vanished (tables reset under load?)", c.requestID)
	}
	return v, err
}

// decideSafe decides c inside tx. A conflicting insert in flight makes the
// INSERT wait until it commits or rolls back, so the holder read after a
// conflict is always there and committed.
func decideSafe(ctx context.Context, tx pgx.Tx, c claim) (verdict, error) {
	if username.Reserved(c.name) {
		return reservedVerdict, nil
	}
	tag, err := tx.Exec(ctx, insertHolder, c.name.Canonical, c.name.Key, c.name.Typed, c.userID, c.requestID)
	if err != nil {
		return verdict{}, fmt.Errorf("inserting the holder of %q: %w", c.name.Canonical, err)
	}
	if tag.RowsAffected() == 1 {
		return wonVerdict, nil
	}
	var h holderRow
	if err := tx.QueryRow(ctx, holderByKey, c.name.Key).Scan(&h.canonical, &h.userID); err != nil {
		return verdict{}, fmt.Errorf("reading the holder of %q: %w", c.name.Canonical, err)
	}
	return judge(c, h), nil
}
