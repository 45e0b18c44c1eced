// Package pg holds the registry's PostgreSQL plumbing: opening a pool and
// running numbered schema migrations (version table, advisory lock). It
// knows no domain rules and no tables: the package that owns the tables
// embeds their migrations (projector/migrations) and keeps its queries
// next to them.
package pg

import (
	"cmp"
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Connect opens a pool to url (a postgres:// URL or key=value string; empty
// means the standard PG* environment variables) and checks it answers.
func Connect(ctx context.Context, url string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parsing database URL: %w", err)
	}
	cfg.MaxConns = cmp.Or(maxConns, cfg.MaxConns)
	if _, set := cfg.ConnConfig.RuntimeParams["plan_cache_mode"]; !set {
		// Statements are prepared once per connection and live as long as
		// it does. With the default mode, PostgreSQL may settle on a
		// generic plan made while the tables were nearly empty (a
		// sequential scan) and keep it as they grow to millions of rows.
		// Planning every execution with its real arguments costs a few
		// microseconds per statement; every query here is batched.
		cfg.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_custom_plan"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening database pool: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to PostgreSQL at %s:%d: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	return pool, nil
}
