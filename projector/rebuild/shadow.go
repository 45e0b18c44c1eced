package rebuild

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/pg"
	"github.com/usernameregistry/registry/projector/internal/projection"
	"github.com/usernameregistry/registry/projector/migrations"
)

// ErrBusy is returned when another rebuild, replay or swap holds the
// database.
var ErrBusy = errors.New("another rebuild, replay or swap is running on this database")

// Progress receives a long read's progress. The command shows it as a
// progress bar on a terminal and as log lines otherwise.
type Progress interface {
	// Start announces a phase that will count to total records.
	Start(phase string, total int64)
	// Add counts n more records done.
	Add(n int)
	// Finish ends the phase.
	Finish()
}

type noProgress struct{}

func (noProgress) Start(string, int64) {}
func (noProgress) Add(int)             {}
func (noProgress) Finish()             {}

// Config configures Build, Verify, Swap and Replay.
type Config struct {
	// Kafka holds the base client options: seed brokers, logging,
	// security. Required.
	Kafka []kgo.Opt
	// Pool is the registry's database, migrated. Required. It needs at
	// least 6 connections: one holds the lock, four COPYs run at once.
	Pool *pgxpool.Pool
	// Samples is how many examples of each kind of problem or difference
	// are reported. Defaults to 10.
	Samples int
	// Topics names the registry's topics. Defaults to events' default
	// names.
	Topics events.Topics
	// AdminKeys verify administrative commands when the replay audit
	// decides them again, as the projectors' keys did; nil refuses them
	// all (a registry without keys decided them so).
	AdminKeys *events.AdminKeys
	// Migrations build the shadow's tables, as they built the live ones.
	// Defaults to the projection's (projector/migrations); a test that
	// migrated its live database further passes the same longer list.
	Migrations []pg.Migration
	// Progress receives progress. Defaults to none.
	Progress Progress
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// WithDefaults returns c with every unset field that has a default set
// to it: the one place the defaults are written.
func (c Config) WithDefaults() Config {
	c.Samples = cmp.Or(c.Samples, 10)
	c.Topics = c.Topics.WithDefaults()
	if c.Migrations == nil {
		c.Migrations = migrations.All()
	}
	if c.Progress == nil {
		c.Progress = noProgress{}
	}
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c
}

// fill sets the defaults and checks the required fields.
func (c *Config) fill() error {
	if len(c.Kafka) == 0 || c.Pool == nil {
		return errors.New("rebuild: Kafka options and a database pool are required")
	}
	*c = c.WithDefaults()
	return nil
}

// BuildReport says what Build read and built.
type BuildReport struct {
	Partitions int32
	Ends       Offsets         // registrations end offsets read up to
	Records    int64           // records read
	Decisions  int64           // distinct decisions loaded
	Ledger     int64           // request ledger rows
	Holders    int64           // usernames rows
	Conflicts  int64           // decisions published and not stored: request_conflict, policy_upgrading
	Copies     int64           // records repeating a loaded decision, skipped
	Next       map[int32]int64 // rebuilt next_offset per partition
	// Unreadable counts records that are not a usable decision; they are
	// skipped. UnreadableSamples describes the first ones.
	Unreadable        int64
	UnreadableSamples []string
	// Contradicting counts copies whose bytes differ from the first
	// decision at their position; ContradictingSamples names positions.
	Contradicting        int
	ContradictingSamples []string
	Elapsed              time.Duration
}

// Build rebuilds the projection from the registrations topic into
// ShadowSchema, dropping whatever a previous run left there. It reads
// every partition from offset 0 to the end offsets it captures when it
// starts, bulk-loads with COPY, builds the indexes and constraints after
// the load, and checks the invariants. The live tables are only read
// (for their shape). If ctx ends, the shadow is left incomplete and the
// live projection is untouched.
func Build(ctx context.Context, cfg Config) (*BuildReport, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	start := time.Now()
	sess, err := open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer sess.close()
	adm, partitions := sess.adm, sess.partitions
	ends, err := Ends(ctx, adm, cfg.Topics.Registrations)
	if err != nil {
		return nil, err
	}
	ixs, err := prepare(ctx, cfg, ShadowSchema, ends)
	if err != nil {
		return nil, err
	}
	rep := &BuildReport{Partitions: partitions, Ends: ends, Next: map[int32]int64{}}
	if err := load(ctx, cfg, ends, rep); err != nil {
		return nil, err
	}
	cfg.Logger.Info("shadow loaded; building indexes and checking invariants", "decisions", rep.Decisions, "took", time.Since(start).Round(time.Millisecond))
	rep.ContradictingSamples, rep.Contradicting, err = finish(ctx, cfg.Pool, ShadowSchema, ixs, rep.Next, partitions, cfg.Samples)
	if err != nil {
		return nil, err
	}
	if err := advanceOverCopies(ctx, cfg, adm, partitions, rep.Next); err != nil {
		return nil, err
	}
	if _, err := cfg.Pool.Exec(ctx, `INSERT INTO `+q(ShadowSchema)+`.complete DEFAULT VALUES`); err != nil {
		return nil, fmt.Errorf("marking the shadow complete: %w", err)
	}
	rep.Elapsed = time.Since(start)
	return rep, nil
}

// prepare creates schema afresh, with its indexes deferred until the
// load is done, and records the end offsets it is built up to.
func prepare(ctx context.Context, cfg Config, schema string, ends Offsets) ([]deferredIndex, error) {
	if err := createSchema(ctx, cfg.Pool, schema, cfg.Migrations); err != nil {
		return nil, fmt.Errorf("creating schema %s: %w", schema, err)
	}
	ixs, err := deferIndexes(ctx, cfg.Pool, schema)
	if err != nil {
		return nil, err
	}
	parts, offs := []int32{}, []int64{}
	for _, p := range sortedPartitions(ends) {
		parts, offs = append(parts, p), append(offs, ends[p])
	}
	_, err = cfg.Pool.Exec(ctx, `INSERT INTO `+q(schema)+`.source_ends SELECT * FROM unnest($1::int[], $2::bigint[])`, parts, offs)
	if err != nil {
		return nil, fmt.Errorf("recording end offsets: %w", err)
	}
	return ixs, nil
}

// load streams registrations [0, ends) into the shadow's tables.
func load(ctx context.Context, cfg Config, ends Offsets, rep *BuildReport) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	l := startLoader(ctx, cfg.Pool, ShadowSchema)
	ap := &applier{l: l, rep: rep, samples: cfg.Samples, k: newKeyed(len(ends))}
	cfg.Progress.Start("reading registrations", ends.Total())
	err := read(ctx, cfg.Kafka, cfg.Topics.Registrations, Offsets{}, ends, func(_ int32, recs []*kgo.Record) error {
		for _, r := range recs {
			if err := ap.apply(ctx, r); err != nil {
				return err
			}
		}
		cfg.Progress.Add(len(recs))
		return nil
	})
	cfg.Progress.Finish()
	if err != nil {
		cancel()
		l.abort()
		return err
	}
	if err := l.close(ctx); err != nil {
		return err
	}
	if err := pgx.BeginFunc(ctx, cfg.Pool, func(tx pgx.Tx) error { return ap.k.write(ctx, tx, ShadowSchema) }); err != nil {
		return err
	}
	rep.Ledger, rep.Holders, rep.Conflicts = l.requests.rows, l.usernames.rows, l.conflicts.rows
	return nil
}

// applier turns registrations records into shadow rows. A record whose
// claim position is below its partition's next offset names a decision
// already loaded: decisions first appear in claim order (the outbox is
// published in order), and every later record for a position is a copy.
type applier struct {
	l       *loader
	k       *keyed // what releases, renames, reservations and transfers do beyond adding rows
	rep     *BuildReport
	samples int
}

// decode counts r and decodes it; a record it cannot decode is counted
// (and described, up to the sample limit) as unreadable, and nil returned.
func (a *applier) decode(r *kgo.Record) *decision {
	a.rep.Records++
	d, err := decodeDecision(r)
	if err != nil {
		a.rep.Unreadable++
		if len(a.rep.UnreadableSamples) < a.samples {
			a.rep.UnreadableSamples = append(a.rep.UnreadableSamples, fmt.Sprintf("registrations %d/%d: %v", r.Partition, r.Offset, err))
		}
	}
	return d
}

func (a *applier) apply(ctx context.Context, r *kgo.Record) error {
	d := a.decode(r)
	if d == nil {
		return nil
	}
	if d.ClaimOffset < a.rep.Next[d.ClaimPartition] {
		a.rep.Copies++
		return a.l.copy(ctx, d.ClaimPartition, d.ClaimOffset, d.value)
	}
	a.rep.Next[d.ClaimPartition] = d.ClaimOffset + 1
	a.rep.Decisions++
	live, err := a.k.add(d.Decision, d.change)
	if err != nil {
		return err
	}
	if err := a.l.add(ctx, rowSet{username: live}); err != nil {
		return err
	}
	return a.l.decision(ctx, d)
}

// lock takes the rebuild advisory lock on a connection of its own, held
// until unlock.
// session is what a rebuild or a replay holds while it runs: the lock
// that keeps another out, a Kafka client, and the checked partition count.
type session struct {
	cl         *kgo.Client
	adm        *kadm.Client
	partitions int32
	unlock     func()
}

// open takes the lock, connects to Kafka and checks the topics still hold
// everything.
func open(ctx context.Context, cfg Config) (*session, error) {
	unlock, err := lock(ctx, cfg.Pool)
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(cfg.Kafka...)
	if err != nil {
		unlock()
		return nil, err
	}
	s := &session{cl: cl, adm: kadm.NewClient(cl), unlock: unlock}
	if s.partitions, err = CheckLog(ctx, s.adm, cfg.Topics); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *session) close() {
	s.cl.Close()
	s.unlock()
}

func lock(ctx context.Context, pool *pgxpool.Pool) (func(), error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquiring a connection for the rebuild lock: %w", err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, rebuildLock).Scan(&ok); err != nil {
		conn.Release()
		return nil, fmt.Errorf("taking the rebuild lock: %w", err)
	}
	if !ok {
		conn.Release()
		return nil, ErrBusy
	}
	return func() {
		conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, rebuildLock) //nolint:errcheck // the lock also ends with the session
		conn.Release()
	}, nil
}

// advanceOverCopies moves each partition's rebuilt next offset past the
// claims at its end whose decisions were copies. A copy names the first
// claim with its request_id, not its own position, so when a partition's
// last decided claims were repeats, the decisions alone put next_offset
// too low; the projector would then publish those copies again. A claim
// after the last decision whose request_id, user_id and username match a
// ledger row of its partition was (or will be) decided as a copy, which
// changes nothing, so the partition resumes after it. The first claim
// that is not a repeat ends the walk: it was not decided yet, or its
// decision is still in the outbox (see Swap).
func advanceOverCopies(ctx context.Context, cfg Config, adm *kadm.Client, partitions int32, next map[int32]int64) error {
	ends, err := Ends(ctx, adm, cfg.Topics.Claims)
	if err != nil {
		return err
	}
	for p := range partitions {
		if next[p] >= ends[p] {
			continue
		}
		n, err := walkCopies(ctx, cfg, p, next[p], ends[p], partitions)
		if err != nil {
			return err
		}
		if n == next[p] {
			continue
		}
		next[p] = n
		if _, err := cfg.Pool.Exec(ctx, `UPDATE `+q(ShadowSchema)+`.claim_partitions SET next_offset = $2 WHERE partition = $1`, p, n); err != nil {
			return fmt.Errorf("advancing partition %d past copies: %w", p, err)
		}
	}
	return nil
}

func walkCopies(ctx context.Context, cfg Config, p int32, from, end int64, partitions int32) (int64, error) {
	var n = from
	stop := errors.New("stop")
	err := read(ctx, cfg.Kafka, cfg.Topics.Claims, Offsets{p: from}, Offsets{p: end}, func(_ int32, recs []*kgo.Record) error {
		for _, r := range recs {
			id, user, name := projection.LedgerIdentity(r, int(partitions))
			var repeat bool
			err := cfg.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+q(ShadowSchema)+`.requests
				WHERE request_id = $1 AND claim_partition = $2 AND user_id = $3 AND username = $4)`, id, p, user, name).Scan(&repeat)
			if err != nil {
				return fmt.Errorf("looking up claims %d/%d in the shadow ledger: %w", p, r.Offset, err)
			}
			if !repeat {
				return stop
			}
			n = r.Offset + 1
		}
		return nil
	})
	if err != nil && !errors.Is(err, stop) {
		return 0, err
	}
	return n, nil
}
