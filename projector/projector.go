package projector

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/kafka"
	"github.com/usernameregistry/registry/projector/internal/projection"
)

// Config configures a Projector.
type Config struct {
	// Kafka holds the base client options: seed brokers, logging, security.
	// Required.
	Kafka []kgo.Opt
	// ClientOpts, when set, gives options for each client the projector
	// creates, by role: "projector" for the client that publishes
	// decisions and reads log ends, "projector-consumer" for the group
	// member. Kafka is often shared with other clients, so metrics hooks,
	// which must register once per client, go here. A group member is
	// created again each time the projector rejoins the group; the previous
	// one is closed first.
	ClientOpts func(role string) []kgo.Opt
	// Group is the consumer group that shares the claims partitions among
	// projectors. Defaults to "registry-projector".
	Group string
	// Topics names the registry's topics: claims are consumed from
	// Topics.Claims and decisions published to Topics.Registrations.
	// Defaults to events' default names.
	Topics events.Topics
	// Partitions is the partition count of the claims topic, as checked at
	// start. Required.
	Partitions int32
	// PolicyVersion, when not 0, is the username policy version this
	// projector must decide under; Run refuses a database recorded under
	// another. When 0, Run decides under the recorded version, recording
	// username.Latest in a new database (see PolicyVersion).
	PolicyVersion int
	// SessionTimeout is how long the group waits for a silent member before
	// giving its partitions to another. Defaults to 45s.
	SessionTimeout time.Duration
	// RebalanceTimeout is how long the group waits for every member to
	// rejoin when partitions move. A member that does not (killed, or
	// paused) holds every partition of the group still until then; one
	// that comes back later is fenced by the epochs and joins again.
	// Defaults to SessionTimeout (franz-go's own default is 60s).
	RebalanceTimeout time.Duration
	// RetryBackoff is the first wait after a transient fault (database or
	// broker unreachable); it doubles up to MaxRetryBackoff. Defaults to
	// 100ms.
	RetryBackoff time.Duration
	// MaxRetryBackoff caps RetryBackoff. Defaults to 5s.
	MaxRetryBackoff time.Duration
	// AttemptTimeout bounds one try at a batch (commit and publish), so a
	// broker or database that stops answering turns into a retry, and a
	// shutdown is not held up forever. Defaults to 30s.
	AttemptTimeout time.Duration
	// Failpoint, when set, is called at each fault point of a round
	// (FailBeforeBegin, FailBeforeCommit, FailAfterCommit, FailAfterPublish)
	// with its name; an error it returns fails that step as a lost
	// connection would. For tests and the chaos harness (see
	// ParseFailpoints). Defaults to none.
	Failpoint func(name string) error
	// AdminKeys verifies the proof an administrative command written to
	// claims must carry (events.HeaderProof); see checkAdminProof. Nil
	// means every administrative command is decided invalid. Give every
	// projector and every API node the same key file (and the replay audit,
	// once it decides administrative commands).
	AdminKeys *events.AdminKeys
	// Metrics receives the projector's metrics. Defaults to unregistered
	// metrics.
	Metrics *Metrics
	// Logger receives the projector's logs. Defaults to slog.Default().
	Logger *slog.Logger
}

// WithDefaults returns cfg with every unset field that has a default set
// to it. It is the one place the defaults are written; the command's
// flags show them from here.
func (cfg Config) WithDefaults() Config {
	cfg.Topics = cfg.Topics.WithDefaults()
	cfg.Group = cmp.Or(cfg.Group, "registry-projector")
	cfg.SessionTimeout = cmp.Or(cfg.SessionTimeout, 45*time.Second)
	cfg.RebalanceTimeout = cmp.Or(cfg.RebalanceTimeout, cfg.SessionTimeout)
	cfg.RetryBackoff = cmp.Or(cfg.RetryBackoff, 100*time.Millisecond)
	cfg.MaxRetryBackoff = cmp.Or(cfg.MaxRetryBackoff, 5*time.Second)
	cfg.AttemptTimeout = cmp.Or(cfg.AttemptTimeout, 30*time.Second)
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	return cfg
}

// Projector is one member of the projector group: for each partition it is
// assigned, it is the only writer, deciding claims in log order.
type Projector struct {
	cfg  Config
	pool *pgxpool.Pool
	log  *slog.Logger

	mu    sync.Mutex
	owned map[int32]*partitionState // partitions this member holds, by number

	halt context.CancelCauseFunc // stops Run with a fatal error

	// roundTypes are the command types of the round being published, for
	// the typed after-publish failpoints; nil when relaying.
	roundTypes []string

	rules projection.Rules // the partition count and the username policy claims are checked against

	// pub publishes decisions and lists log ends. It is not a group member,
	// so it lives for the whole Run while group members come and go.
	pub *kgo.Client

	// published are outbox ids whose records Kafka acknowledged. The next
	// round's transaction deletes them (or poll, when no round comes), so
	// publishing costs no commit of its own. Only the loop goroutine uses it.
	published []int64
}

// partitionState is this member's view of one owned partition.
type partitionState struct {
	partition  int32
	epoch      int64 // the epoch this member bumped to on assignment
	nextOffset int64 // first offset not yet decided
	fenced     bool  // a newer owner exists: drop records until reassigned
	resync     bool  // a fault left the last commit's outcome unknown
	// policy is the username policy the partition decides under (its
	// claim_partitions.policy_version, else the registry's initial
	// version); nil until read. An activation changes it.
	policy *username.Policy
	// upgraded: the partition activated a policy version (an activation
	// set its policy_version); see projection.Rules.Upgraded.
	upgraded bool
}

// New returns a Projector writing through pool.
func New(cfg Config, pool *pgxpool.Pool) (*Projector, error) {
	if len(cfg.Kafka) == 0 || cfg.Partitions <= 0 || pool == nil {
		return nil, errors.New("projector: Kafka options, Partitions and a database pool are required")
	}
	cfg = cfg.WithDefaults()
	policy, err := username.ForVersion(cmp.Or(cfg.PolicyVersion, username.Latest))
	if err != nil {
		return nil, fmt.Errorf("projector: %w", err)
	}
	return &Projector{cfg: cfg, pool: pool, log: cfg.Logger.With("component", "projector"), owned: map[int32]*partitionState{},
		rules: projection.Rules{Partitions: int(cfg.Partitions), Policy: policy}}, nil
}

// ErrOffsetBeyondLogEnd is wrapped when a partition's stored next offset is
// past the end of the claims log: the broker lost acknowledged claims. The
// projector halts rather than skip or re-decide anything.
var ErrOffsetBeyondLogEnd = errors.New("stored offset is beyond the end of the claims log")

// ErrDataLoss is wrapped when the claims log lost records the projector
// had already read: the client reported data loss (a leader came back
// with a shorter log, detected through its leader epoch: franz-go's
// *kgo.ErrDataLoss), or a fetch returned a record below the partition's
// stored next offset, so offsets already decided now hold other claims.
// The projector halts rather than treat new claims as decided or decide
// any claim twice.
var ErrDataLoss = errors.New("the claims log lost records that were decided")

// ErrLayoutChanged is wrapped when the claims topic's partition count
// differs from the one recorded at first run.
var ErrLayoutChanged = errors.New("claims partition count changed")

// ErrPolicyVersion is wrapped when the username policy version recorded
// in the database is not one this projector can or may decide under: a
// registry never mixes versions (docs/design.md, "Policy version pinning").
var ErrPolicyVersion = errors.New("username policy version mismatch")

// Run consumes claims until ctx ends (a clean stop, returning nil) or a
// fatal condition halts it. A batch in flight when ctx ends is finished.
// Run may be called once per Projector.
func (p *Projector) Run(ctx context.Context) error {
	stored, err := recordLayout(ctx, p.pool, p.cfg.Topics.Claims, p.cfg.Partitions)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting: a clean stop
		}
		return err
	}
	if stored != p.cfg.Partitions {
		return fmt.Errorf("%w: the database was built for %d partitions, the topic has %d; names would move between partitions",
			ErrLayoutChanged, stored, p.cfg.Partitions)
	}
	if p.rules.Policy, err = p.recordedPolicy(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	p.log.Info("deciding under username policy", "policy_version", p.rules.Policy.Version())
	runCtx, halt := context.WithCancelCause(ctx)
	defer halt(nil)
	p.halt = halt
	pub, err := kgo.NewClient(p.publisherOptions()...)
	if err != nil {
		return fmt.Errorf("creating projector client: %w", err)
	}
	defer pub.Close()
	p.pub = pub
	var watcher sync.WaitGroup
	watcher.Go(func() { p.watch(runCtx) })
	err = p.member(runCtx)
	halt(nil) // a fatal cause set earlier stays the cause
	watcher.Wait()
	if cause := context.Cause(runCtx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

// recordedPolicy returns the policy recorded in the database, recording
// the configured (or latest) version in a new one.
func (p *Projector) recordedPolicy(ctx context.Context) (*username.Policy, error) {
	want := cmp.Or(p.cfg.PolicyVersion, username.Latest)
	stored, err := recordPolicy(ctx, p.pool, want)
	if err != nil {
		return nil, err
	}
	if p.cfg.PolicyVersion != 0 && stored != p.cfg.PolicyVersion {
		return nil, fmt.Errorf("%w: the database decides under version %d, this projector was told to decide under %d",
			ErrPolicyVersion, stored, p.cfg.PolicyVersion)
	}
	policy, err := username.ForVersion(stored)
	if err != nil {
		return nil, fmt.Errorf("%w: the database decides under version %d: %w", ErrPolicyVersion, stored, err)
	}
	return policy, nil
}

// errRejoin asks member to leave the group and join again: a partition was
// fenced, which a rebuild's swap does to every running projector (see
// doc.go, "Rejoining").
var errRejoin = errors.New("fenced: rejoining the group")

// member runs group members one after another: one is closed, leaving the
// group, and a new one joins whenever a batch found its partition fenced.
// Leaving hands the partitions back to the group, and joining again bumps
// the epoch of whatever the group assigns and resumes at the stored
// offsets. This is safe for a real zombie too: the group decides what it
// gets, and every assignment fences the previous owner.
func (p *Projector) member(ctx context.Context) error {
	for {
		cl, err := kgo.NewClient(p.memberOptions()...)
		if err != nil {
			return fmt.Errorf("creating projector group client: %w", err)
		}
		err = p.loop(ctx, cl)
		if len(p.published) > 0 {
			p.flushPublished(ctx)
		}
		cl.Close()
		p.releaseAll()
		if !errors.Is(err, errRejoin) {
			return err
		}
		p.log.Info("rejoining the projector group after a fence")
	}
}

func (p *Projector) roleOptions(role string) []kgo.Opt {
	opts := append([]kgo.Opt{}, p.cfg.Kafka...)
	if p.cfg.ClientOpts != nil {
		opts = append(opts, p.cfg.ClientOpts(role)...)
	}
	return opts
}

func (p *Projector) publisherOptions() []kgo.Opt {
	return append(p.roleOptions("projector"),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), // decisions go to the claim's partition number
		kgo.ProducerLinger(0),
	)
}

func (p *Projector) memberOptions() []kgo.Opt {
	return append(p.roleOptions("projector-consumer"),
		kgo.ConsumerGroup(p.cfg.Group),
		kgo.ConsumeTopics(p.cfg.Topics.Claims),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NoResetOffset()),
		kgo.SessionTimeout(p.cfg.SessionTimeout),
		kgo.RebalanceTimeout(p.cfg.RebalanceTimeout),
		kgo.BlockRebalanceOnPoll(),
		kgo.AutoCommitMarks(), // group offsets are for lag monitoring only; PostgreSQL holds the truth
		kgo.AdjustFetchOffsetsFn(p.onAssigned),
		kgo.OnPartitionsRevoked(p.onLost),
		kgo.OnPartitionsLost(p.onLost),
	)
}

// onAssigned runs when the group gives this member partitions, before any
// fetch: it bumps each partition's epoch in PostgreSQL, which fences the
// previous owner, and starts consumption at the stored next offset.
func (p *Projector) onAssigned(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	parts := make([]int32, 0, len(offsets[p.cfg.Topics.Claims]))
	for part := range offsets[p.cfg.Topics.Claims] {
		if part >= p.cfg.Partitions {
			err := fmt.Errorf("%w: assigned partition %d but the registry has %d", ErrLayoutChanged, part, p.cfg.Partitions)
			p.halt(err)
			return nil, err
		}
		parts = append(parts, part)
	}
	as, err := assign(ctx, p.pool, parts)
	if err != nil {
		return nil, err // kgo retries the join; nothing was decided
	}
	if err := p.checkLogEnds(ctx, as); err != nil {
		if errors.Is(err, ErrOffsetBeyondLogEnd) {
			p.halt(err)
		}
		return nil, err // otherwise transient: kgo rejoins and we try again
	}
	if err := p.checkLastDecided(ctx, as); err != nil {
		if errors.Is(err, ErrDataLoss) {
			p.halt(err)
		}
		return nil, err
	}
	offsets = p.own(as)
	p.relayAssigned(ctx, as)
	return offsets, nil
}

// relayAssigned publishes what a previous owner committed but did not
// publish, now rather than when the partition's next claim arrives: a
// quiet partition would otherwise hold those decisions back indefinitely.
// A failure leaves the partition marked for resync, so its first batch
// tries again.
func (p *Projector) relayAssigned(ctx context.Context, as []assignment) {
	for _, a := range as {
		st := p.state(a.partition)
		if st == nil {
			continue
		}
		if err := p.relay(ctx, a.partition); err != nil {
			p.log.Warn("republishing outbox on assignment failed; retrying with the next batch", "partition", a.partition, "error", err)
			continue
		}
		st.resync = false
	}
}

func (p *Projector) own(as []assignment) map[string]map[int32]kgo.Offset {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[int32]kgo.Offset{}
	for _, a := range as {
		p.owned[a.partition] = &partitionState{partition: a.partition, epoch: a.epoch, nextOffset: a.nextOffset, resync: true}
		out[a.partition] = resumeAt(a.nextOffset)
		p.log.Info("partition assigned", "partition", a.partition, "next_offset", a.nextOffset, "epoch", a.epoch)
	}
	return map[string]map[int32]kgo.Offset{p.cfg.Topics.Claims: out}
}

// checkLogEnds halts when a stored offset is past the log end: the broker
// lost claims that were decided. A partition whose end offset is not
// available yet (a leader election under way: OFFSET_NOT_AVAILABLE,
// KIP-207) is asked again for up to AttemptTimeout, rather than failing
// the whole assignment and forcing the group to rebalance.
func (p *Projector) checkLogEnds(ctx context.Context, as []assignment) error {
	lctx, cancel := context.WithTimeout(ctx, p.cfg.AttemptTimeout)
	defer cancel()
	ends, err := kafka.ListEndOffsets(lctx, kadm.NewClient(p.pub), p.cfg.Topics.Claims)
	if err != nil {
		return fmt.Errorf("listing claims end offsets: %w", err)
	}
	for _, a := range as {
		end, ok := ends.Lookup(p.cfg.Topics.Claims, a.partition)
		if !ok || end.Err != nil {
			return fmt.Errorf("listing end offset of claims partition %d: %v", a.partition, end.Err)
		}
		if a.nextOffset > end.Offset {
			return fmt.Errorf("%w: partition %d: stored next offset %d, log end offset %d; restore the broker's data or rebuild, never skip",
				ErrOffsetBeyondLogEnd, a.partition, a.nextOffset, end.Offset)
		}
	}
	return nil
}

func (p *Projector) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, part := range lost[p.cfg.Topics.Claims] {
		delete(p.owned, part)
		p.cfg.Metrics.forget(part)
		p.log.Info("partition released", "partition", part)
	}
}

// releaseAll forgets every partition, once a group member is closed.
func (p *Projector) releaseAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for part := range p.owned {
		delete(p.owned, part)
		p.cfg.Metrics.forget(part)
	}
}

func (p *Projector) ownedPartitions() []int32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	parts := make([]int32, 0, len(p.owned))
	for part := range p.owned {
		parts = append(parts, part)
	}
	return parts
}

func (p *Projector) state(part int32) *partitionState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.owned[part]
}

// idleFlush is how long a quiet poll waits before it deletes published
// outbox rows on its own, instead of with the next round's transaction.
const idleFlush = time.Second

func (p *Projector) loop(ctx context.Context, cl *kgo.Client) error {
	for {
		fetches := p.poll(ctx, cl)
		if ctx.Err() != nil {
			cl.AllowRebalance()
			return nil
		}
		if err := p.fetchErrors(fetches); err != nil {
			cl.AllowRebalance()
			return err
		}
		var batches []*batch
		var lost error
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			if len(fp.Records) == 0 {
				return
			}
			st := p.state(fp.Partition)
			if st == nil { // revoked between fetch and now
				return
			}
			// The client fetches on from where the last round ended, which
			// is the stored next offset; only a log that lost its tail
			// and was written again hands back a lower offset.
			if first := fp.Records[0].Offset; first < st.nextOffset && lost == nil {
				lost = fmt.Errorf("%w: claims partition %d: fetched offset %d below the stored next offset %d; restore the broker's data or rebuild, never skip",
					ErrDataLoss, fp.Partition, first, st.nextOffset)
			}
			batches = append(batches, &batch{st: st, recs: fp.Records, highWatermark: fp.HighWatermark})
		})
		if lost != nil {
			cl.AllowRebalance()
			return lost
		}
		if len(batches) > 0 {
			p.round(ctx, cl, batches)
		}
		cl.AllowRebalance()
		if p.anyFenced() {
			return errRejoin
		}
	}
}

// poll waits for records. While published outbox rows wait for the next
// round's transaction to delete them, it waits at most idleFlush, then
// deletes them itself, so a quiet registry's outbox empties.
func (p *Projector) poll(ctx context.Context, cl *kgo.Client) kgo.Fetches {
	if len(p.published) == 0 {
		return cl.PollFetches(ctx)
	}
	pctx, cancel := context.WithTimeout(ctx, idleFlush)
	defer cancel()
	fetches := cl.PollFetches(pctx)
	// Records that arrived as the wait ran out are returned with it: the
	// client counts them as consumed, so dropping them here would leave a
	// gap that the next round's compare-and-set would advance over.
	if pctx.Err() != nil && ctx.Err() == nil && fetches.NumRecords() == 0 {
		p.flushPublished(ctx)
		return nil
	}
	return fetches
}

// flushPublished deletes the outbox rows already published. A failure
// keeps them for the next round; they are only ever published again.
func (p *Projector) flushPublished(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.AttemptTimeout)
	defer cancel()
	if _, err := p.pool.Exec(ctx, sqlDeleteOutbox, p.published); err != nil {
		p.log.Warn("deleting published outbox rows; retrying later", "rows", len(p.published), "error", err)
		return
	}
	p.published = nil
}

func (p *Projector) anyFenced() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, st := range p.owned {
		if st.fenced {
			return true
		}
	}
	return false
}

// fetchErrors returns a fatal fetch error. OffsetOutOfRange can only mean
// the log no longer holds the stored position, and data loss that the
// log was cut below it; everything else the client retries by itself.
func (p *Projector) fetchErrors(fetches kgo.Fetches) error {
	for _, fe := range fetches.Errors() {
		var loss *kgo.ErrDataLoss
		switch {
		case errors.As(fe.Err, &loss):
			return fmt.Errorf("%w: claims partition %d: the broker's log ends at %d, but offsets up to %d were read; restore the broker's data or rebuild, never skip: %v",
				ErrDataLoss, fe.Partition, loss.ResetTo, loss.ConsumedTo, fe.Err)
		case errors.Is(fe.Err, context.Canceled), errors.Is(fe.Err, context.DeadlineExceeded), errors.Is(fe.Err, kgo.ErrClientClosed):
		case errors.Is(fe.Err, kerr.OffsetOutOfRange):
			return fmt.Errorf("%w: partition %d: %v", ErrOffsetBeyondLogEnd, fe.Partition, fe.Err)
		default:
			p.log.Warn("fetch error", "topic", fe.Topic, "partition", fe.Partition, "error", fe.Err)
		}
	}
	return nil
}

// batch is one partition's records in a round.
type batch struct {
	st            *partitionState
	recs          []*kgo.Record
	highWatermark int64
	ins           []projection.Claim // the undecided records, parsed
}

// round decides one poll's records, of every partition this member owns,
// retrying transient faults until they are committed and published, their
// partitions are fenced, or ctx ends. It never skips a claim and never
// decides one twice. All the partitions' batches share one transaction and
// one produce, so a round costs one commit however many partitions it
// covers.
func (p *Projector) round(ctx context.Context, cl *kgo.Client, bs []*batch) {
	backoff := p.cfg.RetryBackoff
	for {
		start := time.Now()
		err := p.attempt(ctx, bs)
		if err == nil && remaining(bs) {
			backoff = p.cfg.RetryBackoff // an activation ended a batch early: decide the rest under the new version
			continue
		}
		if err == nil {
			took := time.Since(start).Seconds()
			for _, b := range bs {
				if b.st.fenced {
					continue
				}
				p.cfg.Metrics.batchSize.Observe(float64(len(b.recs)))
				p.cfg.Metrics.batchDuration.Observe(took)
				p.cfg.Metrics.setLag(b.st.partition, b.highWatermark-b.st.nextOffset)
				cl.MarkCommitRecords(b.recs[len(b.recs)-1])
			}
			return
		}
		if errors.Is(err, projection.ErrCarryMismatch) {
			p.halt(err) // an impossible state: never decide past it
			return
		}
		for _, b := range bs {
			b.st.resync = true
		}
		p.log.Warn("round failed; retrying", "partitions", len(bs), "error", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, p.cfg.MaxRetryBackoff)
	}
}

// remaining reports whether a batch that is not fenced still has records
// to decide.
func remaining(bs []*batch) bool {
	for _, b := range bs {
		if !b.st.fenced && len(undecided(b.recs, b.st.nextOffset)) > 0 {
			return true
		}
	}
	return false
}

// fence marks a partition fenced: a newer owner holds it.
func (p *Projector) fence(st *partitionState) {
	p.cfg.Metrics.fencing.Inc()
	st.fenced = true
	p.log.Warn("partition fenced; a newer owner holds it", "partition", st.partition, "epoch", st.epoch)
}

// attempt makes one try at a round: catch up after a fault, commit the
// decisions, publish them. Shutdown does not interrupt a try under way:
// the round in flight finishes, within AttemptTimeout.
func (p *Projector) attempt(ctx context.Context, bs []*batch) error {
	if err := p.failpoint(FailBeforeBegin); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.attemptTimeout(bs))
	defer cancel()
	var live []*batch
	activating := false // at most one activation per attempt: each replaces a whole partition's rows
	for _, b := range bs {
		b.ins = nil
		if b.st.fenced {
			continue
		}
		if b.st.resync {
			err := p.resync(ctx, b.st)
			if errors.Is(err, ErrFenced) {
				p.fence(b.st)
				continue
			}
			if err != nil {
				return err
			}
		}
		if b.st.policy == nil {
			if err := p.readPolicy(ctx, b.st); err != nil {
				return err
			}
		}
		recs := upToActivation(undecided(b.recs, b.st.nextOffset))
		if n := len(recs); n > 0 && projection.IsActivation(recs[n-1]) {
			if activating {
				recs = recs[:n-1] // the next attempt of the round activates it
			}
			activating = true
		}
		if len(recs) > 0 {
			rules := p.rules
			rules.Policy, rules.Upgraded = b.st.policy, b.st.upgraded
			b.ins = make([]projection.Claim, len(recs))
			for i, r := range recs {
				b.ins[i] = projection.Parse(r, rules)
				if b.ins[i].Admin() && b.ins[i].Invalid == "" {
					b.ins[i].Invalid = checkAdminProof(p.cfg.AdminKeys, r)
				}
			}
			live = append(live, b)
		}
	}
	if len(live) == 0 {
		return nil
	}
	rows, err := p.commitRound(ctx, live)
	if err != nil {
		return err
	}
	types := roundTypes(live)
	if err := p.failpointFor(FailAfterCommit, types); err != nil {
		return err
	}
	p.roundTypes = types
	defer func() { p.roundTypes = nil }()
	return p.publish(ctx, rows, false)
}

// activationTimeout bounds an attempt that activates a policy version:
// the activation replaces a whole partition's rows in one transaction
// (about 83,000 of a million names over 12 partitions took 15 to 30 s on
// the test machine), so AttemptTimeout alone would time it out and retry
// it for ever.
const activationTimeout = 10 * time.Minute

// attemptTimeout is AttemptTimeout, or activationTimeout when a batch
// holds an activation still to decide.
func (p *Projector) attemptTimeout(bs []*batch) time.Duration {
	for _, b := range bs {
		if recs := upToActivation(undecided(b.recs, b.st.nextOffset)); len(recs) > 0 && projection.IsActivation(recs[len(recs)-1]) {
			return max(p.cfg.AttemptTimeout, activationTimeout)
		}
	}
	return p.cfg.AttemptTimeout
}

// upToActivation cuts recs after the first policy activation: the records
// after it are parsed under the new version, in the next attempt.
func upToActivation(recs []*kgo.Record) []*kgo.Record {
	for i, r := range recs {
		if projection.IsActivation(r) {
			return recs[:i+1]
		}
	}
	return recs
}

// readPolicy reads the username policy the partition decides under. A
// version this build does not have halts the projector: it must not
// decide a partition that a newer build upgraded.
func (p *Projector) readPolicy(ctx context.Context, st *partitionState) error {
	var v int
	if err := p.pool.QueryRow(ctx, sqlPartitionPolicy, st.partition).Scan(&v, &st.upgraded); err != nil {
		return fmt.Errorf("reading the username policy of partition %d: %w", st.partition, err)
	}
	if v == 0 { // no version recorded (Run records one first): the configured one
		st.policy = p.rules.Policy
		return nil
	}
	policy, err := username.ForVersion(v)
	if err != nil {
		err = fmt.Errorf("%w: partition %d decides under version %d: %w", ErrPolicyVersion, st.partition, v, err)
		p.halt(err)
		return err
	}
	st.policy = policy
	return nil
}

// resync re-reads the stored position, since the last commit may or may
// not have happened, and republishes whatever the outbox still holds.
func (p *Projector) resync(ctx context.Context, st *partitionState) error {
	next, epoch, err := position(ctx, p.pool, st.partition)
	if err != nil {
		return err
	}
	if epoch != st.epoch {
		return ErrFenced
	}
	st.nextOffset, st.policy = next, nil
	if err := p.relay(ctx, st.partition); err != nil {
		return err
	}
	st.resync = false
	return nil
}

// roundTypes lists the command types the batches decide, for the typed
// failpoints.
func roundTypes(bs []*batch) []string {
	var types []string
	for _, b := range bs {
		for i := range b.ins {
			if !slices.Contains(types, b.ins[i].Type) {
				types = append(types, b.ins[i].Type)
			}
		}
	}
	return types
}

func undecided(recs []*kgo.Record, next int64) []*kgo.Record {
	for i, r := range recs {
		if r.Offset >= next {
			return recs[i:]
		}
	}
	return nil
}

// A round of at least splitClaims claims over several partitions is split,
// by partition, into up to splitTx transactions committed side by side, so
// that a backlog (after an outage, or a new projector draining the log)
// keeps more than one PostgreSQL backend busy. Smaller rounds, the usual
// case under live traffic, stay one transaction and one commit. Each
// transaction fences and advances only its own partitions, so they are as
// independent as rounds of different projectors.
const (
	splitClaims = 2000
	splitTx     = 2
)

// commitRound commits the batches, split as above, and returns the
// outbox rows to publish. When one transaction fails and another commits,
// it returns the error: the retry re-reads every partition's position
// (resync), so the committed partitions are not decided again, and their
// decisions are relayed from the outbox.
func (p *Projector) commitRound(ctx context.Context, bs []*batch) ([]outboxRow, error) {
	groups := splitRound(bs)
	if len(groups) == 1 {
		return p.commit(ctx, bs)
	}
	rows := make([][]outboxRow, len(groups))
	errs := make([]error, len(groups))
	var wg sync.WaitGroup
	for i, g := range groups {
		var published []int64
		if i == 0 {
			published = p.published // deleted by one of the transactions only
		}
		wg.Go(func() { rows[i], errs[i] = p.commitTx(ctx, g, published) })
	}
	wg.Wait()
	if errs[0] == nil {
		p.published = nil
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return slices.Concat(rows...), nil
}

// splitRound groups the batches for commitRound, balancing the claims
// between the groups. A partition's batch stays whole.
func splitRound(bs []*batch) [][]*batch {
	total := 0
	for _, b := range bs {
		total += len(b.ins)
	}
	n := min(splitTx, len(bs))
	if total < splitClaims || n < 2 {
		return [][]*batch{bs}
	}
	sorted := slices.Clone(bs)
	slices.SortFunc(sorted, func(a, b *batch) int { return len(b.ins) - len(a.ins) }) // largest first
	groups := make([][]*batch, n)
	sizes := make([]int, n)
	for _, b := range sorted {
		i := slices.Index(sizes, slices.Min(sizes))
		groups[i] = append(groups[i], b)
		sizes[i] += len(b.ins)
	}
	return groups
}

// commit decides the batches in one transaction (see commitTx), deleting
// the outbox rows already published.
func (p *Projector) commit(ctx context.Context, bs []*batch) ([]outboxRow, error) {
	rows, err := p.commitTx(ctx, bs, p.published)
	if err != nil {
		return nil, err
	}
	p.published = nil
	return rows, nil
}

// commitTx decides the batches and writes the decisions, the projection,
// the outbox and the new positions in one transaction, which also deletes
// the outbox rows in published. A batch whose partition turns out to be
// fenced is left out and its partition marked. It returns the outbox rows
// to publish. Transactions over disjoint partitions may run concurrently.
func (p *Projector) commitTx(ctx context.Context, bs []*batch, published []int64) ([]outboxRow, error) {
	var rows []outboxRow
	var decided []*events.Decision // new decisions, counted once committed
	var won []*batch               // batches whose compare-and-set matched
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		var err error
		if won, err = advance(ctx, tx, bs); err != nil {
			return err
		}
		if rows, decided, err = decideAndWrite(ctx, tx, won, published, int(p.cfg.Partitions)); err != nil {
			return err
		}
		return p.failpointFor(FailBeforeCommit, roundTypes(won))
	})
	if err != nil {
		return nil, err
	}
	for _, b := range bs {
		if !slices.Contains(won, b) {
			p.fence(b.st)
			continue
		}
		b.st.nextOffset = b.ins[len(b.ins)-1].Offset + 1
		if last := &b.ins[len(b.ins)-1]; last.Type == events.TypePolicyActivating {
			b.st.policy = nil // read again: the activation may have moved the partition to a new version
		}
	}
	for _, d := range decided {
		p.cfg.Metrics.countDecision(d)
	}
	return rows, nil
}

// advance runs the compare-and-set of every batch's partition (the zombie
// fence) and returns the batches that won it. Their rows stay locked until
// the transaction ends.
func advance(ctx context.Context, tx pgx.Tx, bs []*batch) ([]*batch, error) {
	n := len(bs)
	parts, epochs, prevs, nexts := make([]int32, n), make([]int64, n), make([]int64, n), make([]int64, n)
	for i, b := range bs {
		parts[i], epochs[i], prevs[i] = b.st.partition, b.st.epoch, b.st.nextOffset
		nexts[i] = b.ins[len(b.ins)-1].Offset + 1
	}
	rows, err := tx.Query(ctx, bugSQL(sqlAdvance), parts, epochs, prevs, nexts)
	if err != nil {
		return nil, fmt.Errorf("advancing partitions %v: %w", parts, err)
	}
	matched, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil, fmt.Errorf("advancing partitions %v: %w", parts, err)
	}
	var won []*batch
	for _, b := range bs {
		if slices.Contains(matched, b.st.partition) {
			won = append(won, b)
		}
	}
	return won, nil
}

// decideAndWrite decides the batches and writes the results in tx, and
// deletes the outbox rows already published. It returns the outbox rows to
// publish and the decisions that are new (not copies of stored ones).
func decideAndWrite(ctx context.Context, tx pgx.Tx, bs []*batch, published []int64, partitions int) ([]outboxRow, []*events.Decision, error) {
	if len(bs) == 0 { // every partition fenced: only the deletes
		_, err := tx.Exec(ctx, sqlDeleteOutbox, published)
		return nil, nil, err
	}
	states, err := loadStates(ctx, tx, bs)
	if err != nil {
		return nil, nil, err
	}
	w := &writes{}
	var decided []*events.Decision
	for _, b := range bs {
		s := states[b.st.partition]
		for i := range b.ins {
			out, err := projection.Decide(s, &b.ins[i])
			if err != nil {
				return nil, nil, err
			}
			w.add(s, &b.ins[i], out)
			if !out.Copy {
				decided = append(decided, out.Decision)
			}
		}
	}
	if err := w.loadActivationKeys(ctx, tx, partitions); err != nil {
		return nil, nil, err
	}
	q := &pgx.Batch{}
	w.queue(q)
	if len(published) > 0 {
		q.Queue(sqlDeleteOutbox, published)
	}
	if err := tx.SendBatch(ctx, q).Close(); err != nil {
		return nil, nil, fmt.Errorf("writing decisions: %w", err)
	}
	return w.outbox, decided, nil
}
