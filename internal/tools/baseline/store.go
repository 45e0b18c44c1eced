package baseline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/usernameregistry/registry/claims"
	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
)

// claim is a request that passed validation.
type claim struct {
	requestID uuid.UUID
	userID    uuid.UUID
	name      username.Username
}

// verdict is a decision on a claim.
type verdict struct {
	status        string // events.OutcomeRegistered or events.OutcomeRejected
	reason        string // for rejections
	conflictsWith string // canonical name of the holder, for taken and confusable
	won           bool   // this request inserted the holder row (201, not 200)
}

var (
	reservedVerdict = verdict{status: events.OutcomeRejected, reason: events.ReasonReserved}
	conflictVerdict = verdict{status: events.OutcomeRejected, reason: events.ReasonRequestConflict}
	wonVerdict      = verdict{status: events.OutcomeRegistered, won: true}
)

// holderRow is who holds a name's skeleton.
type holderRow struct {
	canonical string
	userID    uuid.UUID
}

// judge decides a claim against the current holder of its skeleton, with
// the registry's rule (projector/decide.go decideFresh): the holder asking
// again for its own name gets it again; another user asking for the same
// name gets taken; anyone asking for a look-alike gets confusable.
func judge(c claim, h holderRow) verdict {
	switch {
	case h.canonical == c.name.Canonical && h.userID == c.userID:
		return verdict{status: events.OutcomeRegistered}
	case h.canonical == c.name.Canonical:
		return verdict{status: events.OutcomeRejected, reason: events.ReasonTaken, conflictsWith: h.canonical}
	default:
		return verdict{status: events.OutcomeRejected, reason: events.ReasonConfusable, conflictsWith: h.canonical}
	}
}

// store decides claims against one variant's tables.
type store struct {
	pool  *pgxpool.Pool
	naive bool
}

func (s *store) claim(ctx context.Context, c claim) (verdict, error) {
	if s.naive {
		return s.claimNaive(ctx, c)
	}
	return s.claimSafe(ctx, c)
}

// querier is a pool, a connection or a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// recordRequest stores v as c's decision with query; it reports whether a
// row was written (false: the request_id had a decision already).
func recordRequest(ctx context.Context, q querier, query string, c claim, v verdict) (bool, error) {
	tag, err := q.Exec(ctx, query, c.requestID, c.userID, c.name.Typed, c.name.Canonical, v.status, v.reason, v.conflictsWith)
	if err != nil {
		return false, fmt.Errorf("recording the decision for request %s: %w", c.requestID, err)
	}
	return tag.RowsAffected() == 1, nil
}

// storedDecision looks up c's request_id with query. A stored decision for
// the same payload is c's decision again (never "won": the holder row is
// not this call's); one for another payload makes c a request_conflict.
func storedDecision(ctx context.Context, q querier, query string, c claim) (verdict, bool, error) {
	var user uuid.UUID
	var typed, canonical string
	var v verdict
	err := q.QueryRow(ctx, query, c.requestID).Scan(&user, &typed, &canonical, &v.status, &v.reason, &v.conflictsWith)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return verdict{}, false, nil
	case err != nil:
		return verdict{}, false, fmt.Errorf("looking up request %s: %w", c.requestID, err)
	case user != c.userID || typed != c.name.Typed:
		return conflictVerdict, true, nil
	}
	return v, true, nil
}

// registration answers GET /v1/usernames/{username}; nil when nobody holds
// canonical.
func (s *store) registration(ctx context.Context, canonical string) (*claims.Registration, error) {
	query := registrationByCanonical
	if s.naive {
		query = naiveRegistrationByCanonical
	}
	var r claims.Registration
	var user, request uuid.UUID
	err := s.pool.QueryRow(ctx, query, canonical).Scan(&r.Username, &r.Canonical, &user, &request, &r.RegisteredAt)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("looking up the holder of %q: %w", canonical, err)
	}
	r.UserID, r.RequestID = user.String(), request.String()
	r.RegisteredAt = r.RegisteredAt.UTC().Truncate(time.Millisecond)
	return &r, nil
}
