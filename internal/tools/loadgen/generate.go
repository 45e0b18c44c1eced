package loadgen

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims"
	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/projector/rebuild"
)

// GenerateConfig configures Generate.
type GenerateConfig struct {
	// Kafka holds the base client options. Required.
	Kafka []kgo.Opt
	// Claims is how many claims records to write. Required.
	Claims int
	// Decisions also writes each claim's decision to registrations, decided
	// by the projector's own rule (rebuild.Decider), as if a projector
	// had run: this fills a registry for a rebuild without running one.
	// Without it only claims are written, and a running projector decides
	// them through the real pipeline. With it, no projector should be
	// running on the topics: it would publish its own copies too.
	Decisions bool
	// Seed makes the claims reproducible. Names carry a tag derived from
	// it, so runs with different seeds do not collide.
	Seed uint64
	// Hot is the share of new claims that go to one of HotNames popular
	// names, spelt three ways (same name: taken; capitalised: taken; with
	// a digit 0 for the letter o: confusable). Defaults to 0.2 and 1000.
	Hot      float64
	HotNames int
	// Retry is the share of claims repeating a recent one (same
	// request_id and payload: the decision is a copy). Defaults to 0.05.
	Retry float64
	// Conflict is the share of claims reusing a recent request_id for
	// another name (request_conflict, or a decision in another
	// partition). Defaults to 0.001.
	Conflict float64
	// Poison is the share of records that are not a readable claim (they
	// are decided invalid). Defaults to 0.0005.
	Poison float64
	// Start is the first record's timestamp; each record is 1ms later.
	// Defaults to 2026-01-01T00:00:00Z.
	Start time.Time
	// Progress receives progress. Defaults to none.
	Progress rebuild.Progress
}

// GenerateReport counts what Generate wrote.
type GenerateReport struct {
	Claims, Decisions int64
	Partitions        int32
}

// generateChunk is how many claims are produced, then decided, at once.
const generateChunk = 8192

// WithDefaults returns cfg with every unset field that has a default set
// to it: the one place the defaults are written.
func (cfg GenerateConfig) WithDefaults() GenerateConfig {
	cfg.Hot, cfg.HotNames, cfg.Retry = cmp.Or(cfg.Hot, 0.2), cmp.Or(cfg.HotNames, 1000), cmp.Or(cfg.Retry, 0.05)
	cfg.Conflict, cfg.Poison = cmp.Or(cfg.Conflict, 0.001), cmp.Or(cfg.Poison, 0.0005)
	cfg.Start = cmp.Or(cfg.Start, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	if cfg.Progress == nil {
		cfg.Progress = noProgress{}
	}
	return cfg
}

// Generate writes cfg.Claims realistic claims to the claims topic (and,
// with cfg.Decisions, their decisions to registrations). The topics must
// exist.
func Generate(ctx context.Context, cfg GenerateConfig) (*GenerateReport, error) {
	if len(cfg.Kafka) == 0 || cfg.Claims <= 0 {
		return nil, errors.New("generate: Kafka options and a positive claim count are required")
	}
	cfg = cfg.WithDefaults()
	cl, err := kgo.NewClient(append(slices.Clone(cfg.Kafka),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(5*time.Millisecond),
		kgo.ProducerBatchMaxBytes(1<<20), kgo.MaxBufferedRecords(4*generateChunk))...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	partitions, err := rebuild.CheckLog(ctx, kadm.NewClient(cl), events.Topics{})
	if err != nil {
		return nil, err
	}
	g := newGenerator(cfg, partitions)
	rep := &GenerateReport{Partitions: partitions}
	cfg.Progress.Start("writing claims", int64(cfg.Claims))
	defer cfg.Progress.Finish()
	for done := 0; done < cfg.Claims; {
		n := min(generateChunk, cfg.Claims-done)
		recs := make([]*kgo.Record, n)
		for i := range recs {
			recs[i] = g.next(cfg.Start.Add(time.Duration(done+i) * time.Millisecond))
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			return rep, fmt.Errorf("writing claims: %w", err)
		}
		rep.Claims += int64(n)
		if cfg.Decisions {
			ds, err := g.decider.Decide(recs)
			if err != nil {
				return rep, err
			}
			if err := cl.ProduceSync(ctx, ds...).FirstErr(); err != nil {
				return rep, fmt.Errorf("writing decisions: %w", err)
			}
			rep.Decisions += int64(len(ds))
		}
		done += n
		cfg.Progress.Add(n)
	}
	return rep, nil
}

// generator makes claims records from a seed.
type generator struct {
	cfg        GenerateConfig
	partitions int32
	rng        *rand.Rand
	tag        string
	seq        uint64
	hot        []string
	recent     *Ring[*events.ClaimSubmitted] // recent claims, for retries and conflicts
	decider    *rebuild.Decider
}

func newGenerator(cfg GenerateConfig, partitions int32) *generator {
	g := &generator{cfg: cfg, partitions: partitions, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)), recent: New[*events.ClaimSubmitted](recentClaims),
		tag: strconv.FormatUint(cfg.Seed, 36), decider: rebuild.NewDecider(partitions)}
	for i := range cfg.HotNames {
		g.hot = append(g.hot, "hot"+g.tag+"o"+strconv.Itoa(i))
	}
	return g
}

// recentClaims is how far back a retry or a conflict reaches.
const recentClaims = 1024

func (g *generator) next(ts time.Time) *kgo.Record {
	var c *events.ClaimSubmitted
	switch r := g.rng.Float64(); {
	case r < g.cfg.Poison:
		rec := &kgo.Record{Topic: events.TopicClaims, Key: []byte("poison"), Value: []byte("not json"), Timestamp: ts,
			Headers: []kgo.RecordHeader{{Key: events.HeaderType, Value: []byte(events.TypeClaimSubmitted)}}}
		rec.Partition = events.Partition(rec.Key, int(g.partitions))
		return rec
	case r < g.cfg.Poison+g.cfg.Retry && g.recent.Len() > 0:
		c = g.recent.Pick(g.rng)
	case r < g.cfg.Poison+g.cfg.Retry+g.cfg.Conflict && g.recent.Len() > 0:
		prev := g.recent.Pick(g.rng)
		c = g.claim(prev.RequestID, g.uuid(), g.name(), ts)
	default:
		c = g.claim(g.uuid(), g.uuid(), g.name(), ts)
		g.remember(c)
	}
	rec, err := events.ClaimRecord(c)
	if err != nil {
		panic(err) // a ClaimSubmitted always encodes
	}
	rec.Timestamp = ts
	rec.Partition = events.Partition(rec.Key, int(g.partitions))
	return rec
}

func (g *generator) claim(requestID, userID, username string, ts time.Time) *events.ClaimSubmitted {
	c, err := claims.Check(claims.Request{RequestID: requestID, UserID: userID, Username: username}, ts)
	if err != nil {
		panic(fmt.Sprintf("generated claim %q breaks the policy: %v", username, err)) // the generator only makes valid names
	}
	return c
}

func (g *generator) remember(c *events.ClaimSubmitted) { g.recent.Add(c) }

// name picks a hot name (spelt as is, capitalised, or with a 0 for an o)
// or the next unique one.
func (g *generator) name() string {
	if g.rng.Float64() >= g.cfg.Hot {
		g.seq++
		return "u" + g.tag + "x" + strconv.FormatUint(g.seq, 10)
	}
	name := g.hot[g.rng.IntN(len(g.hot))]
	switch g.rng.IntN(10) {
	case 0:
		return "H" + name[1:]
	case 1:
		return strings.Replace(name, "o", "0", 1)
	}
	return name
}

func (g *generator) uuid() string {
	return UUID(g.rng).String()
}

type noProgress struct{}

func (noProgress) Start(string, int64) {}
func (noProgress) Add(int)             {}
func (noProgress) Finish()             {}
