// Package baseline is the classic design the registry is measured
// against: the same HTTP claim API, answered by one PostgreSQL transaction
// per request, with no Kafka. It exists for benchmarks (docs/benchmarks.md)
// and comes in two variants:
//
//   - safe (the default): INSERT … ON CONFLICT DO NOTHING into a table
//     with UNIQUE constraints on the canonical name and on its confusable
//     skeleton, then read the holder. The database serialises claims for
//     one name; this is what most teams would build, and it is correct.
//   - naive: SELECT the holder, and INSERT if there is none, as separate
//     statements on a table without constraints. Under concurrency two
//     requests both see a free name and both get it. It is the race the
//     registry's README opens with, kept runnable so the load generator's
//     check can be seen to catch it.
//
// Both use the registry's username policy (claims.Normalize,
// claims.Reserved) and its decision rule, so the same claims get the same
// verdicts; both keep a request ledger so a retried request_id is answered
// as it was the first time.
package baseline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Config configures the baseline API.
type Config struct {
	// Pool is the database the tables live in. Required.
	Pool *pgxpool.Pool
	// Naive selects the check-then-insert variant without constraints.
	// Defaults to false: the safe variant.
	Naive bool
	// Reset drops the variant's tables and starts empty. Defaults to
	// false: names claimed in earlier runs stay claimed.
	Reset bool
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// New creates the variant's tables if they are missing (after dropping
// them when cfg.Reset is set) and returns the HTTP API.
func New(ctx context.Context, cfg Config) (http.Handler, error) {
	if cfg.Pool == nil {
		return nil, errors.New("baseline: Config needs a Pool")
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	if err := setup(ctx, cfg); err != nil {
		return nil, err
	}
	a := &api{store: &store{pool: cfg.Pool, naive: cfg.Naive}, log: cfg.Logger.With("component", "baseline")}
	return a.routes(), nil
}

// Variant names the variant cfg selects, for logs and reports.
func (cfg Config) Variant() string {
	if cfg.Naive {
		return "naive"
	}
	return "safe"
}

func setup(ctx context.Context, cfg Config) error {
	schema, drop := safeSchema, dropSafe
	if cfg.Naive {
		schema, drop = naiveSchema, dropNaive
	}
	err := pgx.BeginFunc(ctx, cfg.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, setupLock); err != nil {
			return err
		}
		if cfg.Reset {
			if _, err := tx.Exec(ctx, drop); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, schema)
		return err
	})
	if err != nil {
		return fmt.Errorf("creating the %s baseline's tables: %w", cfg.Variant(), err)
	}
	return nil
}
