package baseline

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/usernameregistry/registry/claims/username"
)

// claimNaive decides c the way the registry's README warns against: look
// for a decision, look for a holder, insert if there is none, each a
// statement of its own with no constraint behind it. Two requests for one
// name that both read "free" before either inserts both win it. The
// request ledger has the same race, so two racing retries can both decide.
func (s *store) claimNaive(ctx context.Context, c claim) (verdict, error) {
	if v, ok, err := storedDecision(ctx, s.pool, naiveRequestByID, c); err != nil || ok {
		return v, err
	}
	v, err := s.decideNaive(ctx, c)
	if err != nil {
		return verdict{}, err
	}
	if _, err := recordRequest(ctx, s.pool, naiveInsertRequest, c, v); err != nil {
		return verdict{}, err
	}
	return v, nil
}

func (s *store) decideNaive(ctx context.Context, c claim) (verdict, error) {
	if username.Reserved(c.name) {
		return reservedVerdict, nil
	}
	var h holderRow
	err := s.pool.QueryRow(ctx, naiveHolderByKey, c.name.Key).Scan(&h.canonical, &h.userID)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		// The race window: another request may be right here too.
		if _, err := s.pool.Exec(ctx, naiveInsertHolder, c.name.Canonical, c.name.Key, c.name.Typed, c.userID, c.requestID); err != nil {
			return verdict{}, fmt.Errorf("inserting the holder of %q: %w", c.name.Canonical, err)
		}
		return wonVerdict, nil
	case err != nil:
		return verdict{}, fmt.Errorf("reading the holder of %q: %w", c.name.Canonical, err)
	}
	return judge(c, h), nil
}
