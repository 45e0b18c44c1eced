package rebuild

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/projector"
	"github.com/usernameregistry/registry/projector/internal/projection"
)

// ErrPolicyVersion is wrapped when the claims were made under a username
// policy version other than the one this build decides under, and the
// operator did not ask to replay under it anyway.
var ErrPolicyVersion = errors.New("claims were made under another username policy version")

// ReplayConfig configures Replay.
type ReplayConfig struct {
	Config
	// PolicyVersion, when not 0, replays every claim under that username
	// policy version (one this build has), deciding claims made under
	// another version as if they had been made under it, from the name as
	// typed: the report then lists the names whose holder would change.
	// When 0, the claims are replayed under the version recorded in the
	// database, and a claim made under another version stops the replay.
	PolicyVersion int
	// policy is the policy the replay decides under.
	policy *username.Policy
	// Workers is how many partitions are replayed at once. Defaults to 2.
	Workers int
}

// ReplayReport is the determinism audit: the claims decided again,
// compared with the decisions recorded in registrations.
type ReplayReport struct {
	Partitions    int32
	PolicyVersion int // the version the claims were decided under
	Claims        int64
	ClaimVersions map[int]int64 // readable claims by the policy version they were made under
	Decided       int64         // distinct decisions (every claim but the copies)
	Copies        int64         // claims whose decision is a copy of an earlier one
	Recorded      int64         // registrations records read
	// Matched counts decisions recorded byte for byte as replayed, and
	// RecordedCopies the further recorded copies equal to them.
	Matched, RecordedCopies int64
	// Divergent lists positions (partition/offset) where the recorded
	// decision differs from the replayed one, a recorded copy differs
	// from its first decision, or a decision is recorded where the replay
	// has none. Missing lists claims whose decision is absent from
	// registrations although later claims' decisions are there.
	Divergent, Missing Diff
	// Pending counts decisions missing only at the end of a partition:
	// decided live but not yet published, or not decided yet.
	Pending int64
	// NotCompared counts recorded decisions of claims beyond the claims
	// end offsets captured at the start.
	NotCompared int64
	// Unreadable counts registrations records that are not a usable
	// decision.
	Unreadable Diff
	// NamesChanged lists canonical names whose holder differs between the
	// recorded and the replayed decisions.
	NamesChanged Diff
	Elapsed      time.Duration
}

// Diverged reports whether the audit found decisions that are not
// deterministic (or not recorded faithfully).
func (r *ReplayReport) Diverged() bool { return r.Divergent.Count > 0 || r.Missing.Count > 0 }

// Replay decides every claim in the claims topic again, partition by
// partition in log order, with the projector's decision code
// (projection.Redecider) under this build's pinned policy version. It
// writes the resulting projection to ReplaySchema (bulk-loaded, then
// indexed and checked like a rebuild) and compares every decision with the
// ones recorded in registrations.
func Replay(ctx context.Context, cfg ReplayConfig) (*ReplayReport, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	if _, err := projector.PolicyVersion(ctx, cfg.Pool); err != nil {
		return nil, err
	}
	// A replay starts where the log started: under the version the
	// registry was created with; activations in the log move each
	// partition on (docs/design.md, "Upgrading the username policy").
	var recorded int
	if err := cfg.Pool.QueryRow(ctx, `SELECT coalesce(initial_version, version) FROM username_policy`).Scan(&recorded); err != nil {
		return nil, fmt.Errorf("reading the registry's first username policy version: %w", err)
	}
	var err error
	if cfg.policy, err = username.ForVersion(cmp.Or(cfg.PolicyVersion, recorded)); err != nil {
		return nil, fmt.Errorf("--policy-version: %w", err)
	}
	cfg.Workers = max(cfg.Workers, 2)
	start := time.Now()
	sess, err := open(ctx, cfg.Config)
	if err != nil {
		return nil, err
	}
	defer sess.close()
	adm, partitions := sess.adm, sess.partitions
	claimEnds, err := Ends(ctx, adm, cfg.Topics.Claims)
	if err != nil {
		return nil, err
	}
	regEnds, err := Ends(ctx, adm, cfg.Topics.Registrations)
	if err != nil {
		return nil, err
	}
	if err := checkFirstVersions(ctx, cfg, claimEnds); err != nil {
		return nil, err
	}
	ixs, err := prepare(ctx, cfg.Config, ReplaySchema, claimEnds)
	if err != nil {
		return nil, err
	}
	rep := &ReplayReport{Partitions: partitions, PolicyVersion: cfg.policy.Version(), ClaimVersions: map[int]int64{},
		Divergent: Diff{Kind: "divergent"}, Missing: Diff{Kind: "missing from registrations"},
		Unreadable: Diff{Kind: "unreadable"}, NamesChanged: Diff{Kind: "names whose holder would change"}}
	next, err := replayAll(ctx, cfg, partitions, claimEnds, regEnds, rep)
	if err != nil {
		return nil, err
	}
	if _, _, err := finish(ctx, cfg.Pool, ReplaySchema, ixs, next, partitions, cfg.Samples); err != nil {
		return nil, err
	}
	if _, err := cfg.Pool.Exec(ctx, `INSERT INTO `+q(ReplaySchema)+`.complete DEFAULT VALUES`); err != nil {
		return nil, fmt.Errorf("marking the replay complete: %w", err)
	}
	rep.Elapsed = time.Since(start)
	return rep, nil
}

// checkFirstVersions refuses early when the first claim of a partition
// was made under another policy version; later claims are checked as
// they are replayed.
func checkFirstVersions(ctx context.Context, cfg ReplayConfig, ends Offsets) error {
	if cfg.PolicyVersion != 0 {
		return nil
	}
	first := Offsets{}
	for p, end := range ends {
		first[p] = min(end, 1)
	}
	return read(ctx, cfg.Kafka, cfg.Topics.Claims, Offsets{}, first, func(_ int32, recs []*kgo.Record) error {
		for _, r := range recs {
			if c, err := events.DecodeClaim(r); err == nil && c.PolicyVersion != cfg.policy.Version() {
				return versionError(r, c.PolicyVersion, cfg.policy.Version())
			}
		}
		return nil
	})
}

func versionError(r *kgo.Record, v, deciding int) error {
	return fmt.Errorf("%w: claims %d/%d was made under version %d, and this registry decides under version %d. "+
		"Its decisions would change (the projector rejects such claims as invalid). "+
		"Pass --policy-version %d to replay under version %d anyway and see which names would change",
		ErrPolicyVersion, r.Partition, r.Offset, v, deciding, deciding, deciding)
}

// replayAll replays the partitions, cfg.Workers at a time, into one
// loader, and returns the replayed next offsets.
func replayAll(ctx context.Context, cfg ReplayConfig, partitions int32, claimEnds, regEnds Offsets, rep *ReplayReport) (map[int32]int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	l := startLoader(ctx, cfg.Pool, ReplaySchema)
	sink := &lockedLoader{l: l, k: newKeyed(int(partitions))}
	next := map[int32]int64{}
	var mu sync.Mutex
	queue := make(chan int32, partitions)
	for p := range partitions {
		queue <- p
	}
	close(queue)
	cfg.Progress.Start("replaying claims", claimEnds.Total())
	g, gctx := errgroup.WithContext(ctx)
	for range cfg.Workers {
		g.Go(func() error {
			for p := range queue {
				pr := &partitionReplay{cfg: cfg, p: p, partitions: partitions, sink: sink, rep: newPartialReport(rep)}
				if err := pr.run(gctx, claimEnds[p], regEnds[p]); err != nil {
					return fmt.Errorf("replaying partition %d: %w", p, err)
				}
				mu.Lock()
				rep.merge(pr.rep, cfg.Samples)
				next[p] = pr.next
				mu.Unlock()
			}
			return nil
		})
	}
	err := g.Wait()
	cfg.Progress.Finish()
	if err != nil {
		cancel()
		l.abort()
		return nil, err
	}
	if err := l.close(ctx); err != nil {
		return nil, err
	}
	return next, pgx.BeginFunc(ctx, cfg.Pool, func(tx pgx.Tx) error { return sink.k.write(ctx, tx, ReplaySchema) })
}

func newPartialReport(r *ReplayReport) *ReplayReport {
	return &ReplayReport{ClaimVersions: map[int]int64{}, Divergent: Diff{Kind: r.Divergent.Kind}, Missing: Diff{Kind: r.Missing.Kind},
		Unreadable: Diff{Kind: r.Unreadable.Kind}, NamesChanged: Diff{Kind: r.NamesChanged.Kind}}
}

func (r *ReplayReport) merge(o *ReplayReport, samples int) {
	r.Claims += o.Claims
	r.Decided += o.Decided
	r.Copies += o.Copies
	r.Recorded += o.Recorded
	r.Matched += o.Matched
	r.RecordedCopies += o.RecordedCopies
	r.Pending += o.Pending
	r.NotCompared += o.NotCompared
	for v, n := range o.ClaimVersions {
		r.ClaimVersions[v] += n
	}
	for _, d := range []struct{ into, from *Diff }{{&r.Divergent, &o.Divergent}, {&r.Missing, &o.Missing}, {&r.Unreadable, &o.Unreadable}, {&r.NamesChanged, &o.NamesChanged}} {
		d.into.Count += d.from.Count
		d.into.Samples = append(d.into.Samples, d.from.Samples[:min(len(d.from.Samples), samples-len(d.into.Samples))]...)
	}
}

func (d *Diff) add(samples int, format string, args ...any) {
	d.Count++
	if len(d.Samples) < samples {
		d.Samples = append(d.Samples, fmt.Sprintf(format, args...))
	}
}

// lockedLoader lets the replay workers share one loader.
type lockedLoader struct {
	mu sync.Mutex
	l  *loader
	k  *keyed
}

func (s *lockedLoader) add(ctx context.Context, d *events.Decision, c projection.Change, rs rowSet) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	live, err := s.k.add(d, c)
	if err != nil {
		return err
	}
	rs.username = append(rs.username, live...)
	return s.l.add(ctx, rs)
}

// partitionReplay replays one partition and compares as it goes.
type partitionReplay struct {
	cfg        ReplayConfig
	p          int32
	partitions int32
	sink       *lockedLoader
	rep        *ReplayReport
	next       int64

	seed   maphash.Seed
	hashes []uint64 // per claims offset: hash of the replayed decision there, 0 for a copy
	seen   int64    // recorded positions below seen were already compared
	reg    *stream
}

func (pr *partitionReplay) run(ctx context.Context, claimEnd, regEnd int64) error {
	pr.seed = maphash.MakeSeed()
	claimsIn, err := openStream(pr.cfg.Kafka, pr.cfg.Topics.Claims, pr.p, claimEnd)
	if err != nil {
		return err
	}
	defer claimsIn.close()
	if pr.reg, err = openStream(pr.cfg.Kafka, pr.cfg.Topics.Registrations, pr.p, regEnd); err != nil {
		return err
	}
	defer pr.reg.close()
	pr.hashes = make([]uint64, 0, min(claimEnd, 1<<20))
	rd := projection.NewPolicyRedecider(int(pr.partitions), pr.cfg.policy, pr.cfg.PolicyVersion != 0, pr.cfg.AdminKeys)
	n := 0
	for {
		rec, err := claimsIn.next(ctx)
		if err != nil {
			return err
		}
		if rec == nil {
			break
		}
		if err := pr.claim(ctx, rd, rec); err != nil {
			return err
		}
		if n++; n == 1024 {
			pr.cfg.Progress.Add(n)
			n = 0
		}
	}
	pr.cfg.Progress.Add(n)
	pr.next = claimEnd
	return pr.drain(ctx, claimEnd)
}

func (pr *partitionReplay) claim(ctx context.Context, rd *projection.Redecider, rec *kgo.Record) error {
	pr.rep.Claims++
	res, err := rd.Redecide(rec)
	if err != nil {
		return err
	}
	if res.PolicyVersion != 0 {
		pr.rep.ClaimVersions[res.PolicyVersion]++
		if !rd.Upgraded() && res.PolicyVersion != rd.Version() && pr.cfg.PolicyVersion == 0 {
			return versionError(rec, res.PolicyVersion, rd.Version())
		}
	}
	for int64(len(pr.hashes)) <= rec.Offset {
		pr.hashes = append(pr.hashes, 0)
	}
	if res.Copy {
		pr.rep.Copies++
		return nil
	}
	pr.rep.Decided++
	pr.hashes[rec.Offset] = maphash.Bytes(pr.seed, res.Value) | 1 // never 0
	rows, err := changeRows(res.Decision, res.Value, res.Change)
	if err != nil {
		return err
	}
	if err := pr.sink.add(ctx, res.Decision, res.Change, rows); err != nil {
		return err
	}
	return pr.compare(ctx, rec.Offset, res)
}

// compare reads registrations up to the first recorded decision at or
// past position o, and compares the one at o with the replayed res.
func (pr *partitionReplay) compare(ctx context.Context, o int64, res projection.Redecision) error {
	for {
		r, err := pr.reg.peek(ctx)
		if err != nil {
			return err
		}
		if r == nil {
			pr.rep.Pending++
			return nil
		}
		d, ok := pr.recorded(r)
		if !ok {
			pr.reg.pop()
			continue
		}
		switch {
		case d.ClaimOffset < pr.seen || d.ClaimOffset < o:
			pr.reg.pop()
			pr.checkCopy(d)
		case d.ClaimOffset == o:
			pr.reg.pop()
			pr.rep.Recorded++
			pr.seen = o + 1
			if bytes.Equal(d.value, res.Value) {
				pr.rep.Matched++
				return nil
			}
			pr.rep.Divergent.add(pr.cfg.Samples, "claims %d/%d: recorded %s, replayed %s", pr.p, o, d.value, res.Value)
			pr.nameChanges(d, res)
			return nil
		default: // the recorded log skips o
			pr.rep.Missing.add(pr.cfg.Samples, "claims %d/%d: replayed %s", pr.p, o, res.Value)
			if h := res.Change.Holder; h != nil {
				pr.rep.NamesChanged.add(pr.cfg.Samples, "%s: no recorded holder, replay gives it to %s", h.Canonical, h.UserID)
			}
			return nil
		}
	}
}

// recorded decodes the next registrations record, counting it.
func (pr *partitionReplay) recorded(r *kgo.Record) (*decision, bool) {
	d, err := decodeDecision(r)
	if err != nil {
		pr.rep.Recorded++
		pr.rep.Unreadable.add(pr.cfg.Samples, "registrations %d/%d: %v", r.Partition, r.Offset, err)
		return nil, false
	}
	return d, true
}

// checkCopy compares a recorded decision for a position already passed
// with the replayed decision there.
func (pr *partitionReplay) checkCopy(d *decision) {
	pr.rep.Recorded++
	o := d.ClaimOffset
	switch {
	case o >= int64(len(pr.hashes)):
		pr.rep.NotCompared++
	case pr.hashes[o] == 0:
		pr.rep.Divergent.add(pr.cfg.Samples, "claims %d/%d: recorded %s, but the replay decided that claim as a copy of an earlier decision", pr.p, o, d.value)
	case maphash.Bytes(pr.seed, d.value)|1 != pr.hashes[o]:
		pr.rep.Divergent.add(pr.cfg.Samples, "claims %d/%d: a recorded copy %s differs from the replayed decision", pr.p, o, d.value)
	default:
		if o >= pr.seen {
			pr.seen = o + 1
		}
		pr.rep.RecordedCopies++
	}
}

// drain reads the rest of registrations after the last claim.
func (pr *partitionReplay) drain(ctx context.Context, claimEnd int64) error {
	for {
		r, err := pr.reg.peek(ctx)
		if err != nil || r == nil {
			return err
		}
		pr.reg.pop()
		d, ok := pr.recorded(r)
		if !ok {
			continue
		}
		if d.ClaimOffset >= claimEnd {
			pr.rep.Recorded++
			pr.rep.NotCompared++
			continue
		}
		pr.checkCopy(d)
	}
}

func (pr *partitionReplay) nameChanges(d *decision, res projection.Redecision) {
	recorded, replayed := d.change.Holder, res.Change.Holder
	switch {
	case recorded != nil && replayed == nil:
		pr.rep.NamesChanged.add(pr.cfg.Samples, "%s: recorded holder %s, replay gives it to nobody (%s)", d.Canonical, d.UserID, res.Decision.Reason)
	case recorded == nil && replayed != nil:
		pr.rep.NamesChanged.add(pr.cfg.Samples, "%s: no recorded holder, replay gives it to %s", replayed.Canonical, replayed.UserID)
	case recorded != nil && replayed != nil && (recorded.Canonical != replayed.Canonical || recorded.UserID != replayed.UserID):
		pr.rep.NamesChanged.add(pr.cfg.Samples, "%s: recorded holder %s, replay gives %s to %s", recorded.Canonical, recorded.UserID, replayed.Canonical, replayed.UserID)
	}
}
