package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims"
	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/kafka"
	"github.com/usernameregistry/registry/internal/pg"
	"github.com/usernameregistry/registry/internal/pglaunch"
	"github.com/usernameregistry/registry/projector"
	"github.com/usernameregistry/registry/projector/migrations"
)

// DrainConfig configures a projector-alone run: fill the claims topic,
// then time the projectors deciding all of it into PostgreSQL.
type DrainConfig struct {
	// Dir holds the run's broker and PostgreSQL data. It must not exist
	// or be empty. Required.
	Dir string
	// Claims is how many claims to fill the topic with. Defaults to 100000.
	Claims int
	// Partitions of the claims and registrations topics. Defaults to 12.
	Partitions int32
	// Projectors is the number of projector group members in this
	// process, each with its own Kafka clients, sharing one database pool.
	// Defaults to 1.
	Projectors int
	// Prefill is how many names are registered (usernames and ledger rows,
	// bulk-loaded) before the drain, to measure deciding against a large
	// projection.
	Prefill int
	// Hot, HotNames, Retry and Seed shape the claims as in Config.
	Hot      float64
	HotNames int
	Retry    float64
	Seed     uint64
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// DrainReport is what a drain run measured.
type DrainReport struct {
	Claims          int     `json:"claims"`
	Partitions      int32   `json:"partitions"`
	Projectors      int     `json:"projectors"`
	Prefill         int     `json:"prefill"`
	Seed            uint64  `json:"seed"`
	PrefillSeconds  float64 `json:"prefill_seconds"`
	FillSeconds     float64 `json:"fill_seconds"`
	DrainSeconds    float64 `json:"drain_seconds"`
	ClaimsPerSecond float64 `json:"claims_per_second"`
	Registered      int64   `json:"registered"` // names registered by the drained claims
	LedgerRows      int64   `json:"ledger_rows"`
}

// WithDefaults returns cfg with every unset field that has a default set
// to it: the one place the defaults are written.
func (cfg DrainConfig) WithDefaults() DrainConfig {
	cfg.Claims = cmp.Or(cfg.Claims, 100000)
	cfg.Partitions = cmp.Or(cfg.Partitions, 12)
	cfg.Projectors = cmp.Or(cfg.Projectors, 1)
	cfg.HotNames = cmp.Or(cfg.HotNames, 100)
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	if cfg.Seed == 0 {
		cfg.Seed = uint64(time.Now().UnixNano())
	}
	return cfg
}

// Drain fills the claims topic of a fresh embedded broker (persisted and
// fsynced, as in `registry dev`) and times cfg.Projectors projectors
// deciding every claim into a fresh durable PostgreSQL, publishing each
// decision to registrations as they do live.
func Drain(ctx context.Context, cfg DrainConfig) (*DrainReport, error) {
	cfg = cfg.WithDefaults()
	if cfg.Dir == "" {
		return nil, errors.New("bench: DrainConfig.Dir is required")
	}
	if entries, err := os.ReadDir(cfg.Dir); err == nil && len(entries) > 0 {
		return nil, fmt.Errorf("bench: %s is not empty; a drain run needs fresh data", cfg.Dir)
	}
	log := cfg.Logger
	cluster, err := pglaunch.Start(ctx, pglaunch.Config{Dir: filepath.Join(cfg.Dir, "postgres"), Durable: true, Logger: log})
	if err != nil {
		return nil, err
	}
	defer cluster.Stop() //nolint:errcheck // the run's figures are what matter
	pool, err := pg.Connect(ctx, cluster.URL("postgres"), 8)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	if _, err := migrations.Migrate(ctx, pool, log); err != nil {
		return nil, err
	}
	broker, err := kafka.Embedded(filepath.Join(cfg.Dir, "kafka"), 0)
	if err != nil {
		return nil, err
	}
	defer broker.Close()
	opts := kafka.ClientOptions(broker.ListenAddrs(), log)
	rep := &DrainReport{Claims: cfg.Claims, Partitions: cfg.Partitions, Projectors: cfg.Projectors, Prefill: cfg.Prefill, Seed: cfg.Seed}

	start := time.Now()
	if err := prefill(ctx, pool, cfg.Prefill, cfg.Partitions); err != nil {
		return nil, err
	}
	rep.PrefillSeconds = time.Since(start).Seconds()
	start = time.Now()
	ends, err := fill(ctx, opts, cfg)
	if err != nil {
		return nil, err
	}
	rep.FillSeconds = time.Since(start).Seconds()
	log.Info("claims topic filled", "claims", cfg.Claims, "seconds", rep.FillSeconds)

	start = time.Now()
	if err := drain(ctx, opts, pool, cfg, ends); err != nil {
		return nil, err
	}
	rep.DrainSeconds = time.Since(start).Seconds()
	rep.ClaimsPerSecond = float64(cfg.Claims) / rep.DrainSeconds
	err = pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM usernames) - $1, (SELECT count(*) FROM requests) - $1`, cfg.Prefill).
		Scan(&rep.Registered, &rep.LedgerRows)
	if err != nil {
		return nil, fmt.Errorf("counting the projection: %w", err)
	}
	return rep, nil
}

// prefill bulk-loads n registered names, with their ledger rows, spread
// over the partitions as real ones would be. Their claim offsets are
// negative, so they never collide with the positions of the claims the
// drain decides (the ledger's (claim_partition, claim_offset) is unique).
func prefill(ctx context.Context, pool *pgxpool.Pool, n int, partitions int32) error {
	if n == 0 {
		return nil
	}
	at := time.Now().UTC()
	names := func(i int) username.Username {
		name, err := username.Normalize(fmt.Sprintf("pre-%d", i))
		if err != nil {
			panic(err) // the pattern is a valid name
		}
		return name
	}
	offsets := make([]int64, partitions)
	holders := pgx.CopyFromSlice(n, func(i int) ([]any, error) {
		name := names(i)
		part := events.Partition([]byte(name.Key), int(partitions))
		offsets[part]--
		off := offsets[part]
		id := uuid.New()
		return []any{name.Canonical, name.Key, name.Typed, uuid.New(), id, part, off, at}, nil
	})
	if _, err := pool.CopyFrom(ctx, pgx.Identifier{"usernames"},
		[]string{"canonical", "key", "username", "user_id", "request_id", "claim_partition", "claim_offset", "registered_at"}, holders); err != nil {
		return fmt.Errorf("prefilling usernames: %w", err)
	}
	clear(offsets)
	ledger := pgx.CopyFromSlice(n, func(i int) ([]any, error) {
		name := names(i)
		part := events.Partition([]byte(name.Key), int(partitions))
		offsets[part]--
		off := offsets[part]
		return []any{uuid.New(), part, off, uuid.NewString(), name.Typed, name.Canonical, events.OutcomeRegistered, []byte(`{}`)}, nil
	})
	if _, err := pool.CopyFrom(ctx, pgx.Identifier{"requests"},
		[]string{"request_id", "claim_partition", "claim_offset", "user_id", "username", "canonical", "outcome", "decision"}, ledger); err != nil {
		return fmt.Errorf("prefilling requests: %w", err)
	}
	_, err := pool.Exec(ctx, `ANALYZE usernames; ANALYZE requests`)
	return err
}

// fill creates the topics and produces cfg.Claims claims, built by the
// API's own code from the load generator's workload. It returns the
// claims topic's end offsets.
func fill(ctx context.Context, opts []kgo.Opt, cfg DrainConfig) (map[int32]int64, error) {
	cl, err := kgo.NewClient(append(opts, kgo.DefaultProduceTopic(events.TopicClaims), kgo.ProducerLinger(5*time.Millisecond),
		kgo.MaxBufferedRecords(100000))...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if _, err := kafka.EnsureTopics(ctx, adm, cfg.Partitions, -1); err != nil {
		return nil, err
	}
	w := newWorkload(cfg.Seed, cfg.Hot, cfg.Retry, cfg.HotNames)
	now := time.Now()
	errs := make(chan error, 1)
	for range cfg.Claims {
		c := w.next()
		claim, err := claims.Check(claims.Request{RequestID: c.RequestID.String(), UserID: c.UserID.String(), Username: c.Username}, now)
		if err != nil {
			return nil, err
		}
		rec, err := events.ClaimRecord(claim)
		if err != nil {
			return nil, err
		}
		cl.Produce(ctx, rec, func(_ *kgo.Record, err error) {
			if err != nil {
				select {
				case errs <- err:
				default:
				}
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return nil, err
	}
	select {
	case err := <-errs:
		return nil, fmt.Errorf("producing claims: %w", err)
	default:
	}
	listed, err := adm.ListEndOffsets(ctx, events.TopicClaims)
	if err != nil {
		return nil, err
	}
	ends := map[int32]int64{}
	listed.Each(func(o kadm.ListedOffset) { ends[o.Partition] = o.Offset })
	return ends, nil
}

// drain runs the projectors until every partition's stored position
// reaches its end offset.
func drain(ctx context.Context, opts []kgo.Opt, pool *pgxpool.Pool, cfg DrainConfig, ends map[int32]int64) error {
	ctx, cancel := context.WithCancel(ctx)
	errs := make(chan error, cfg.Projectors)
	running := 0
	// The projectors stop before drain returns, so they are done with the
	// pool and the broker that the caller closes next.
	defer func() {
		cancel()
		for ; running > 0; running-- {
			<-errs
		}
	}()
	for range cfg.Projectors {
		p, err := projector.New(projector.Config{Kafka: opts, Partitions: cfg.Partitions, Logger: cfg.Logger}, pool)
		if err != nil {
			return err
		}
		running++
		go func() { errs <- p.Run(ctx) }()
	}
	var want int64
	for _, end := range ends {
		want += end
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var done int64
		if err := pool.QueryRow(ctx, `SELECT coalesce(sum(next_offset), 0) FROM claim_partitions`).Scan(&done); err != nil {
			return fmt.Errorf("reading progress: %w", err)
		}
		if done >= want {
			return nil
		}
		select {
		case err := <-errs:
			running--
			return fmt.Errorf("a projector stopped during the drain: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
