package registrations

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
)

// DefaultRemember is how many distinct decisions a Tail remembers, by
// default, to recognise later copies. Each costs 200 to 300 bytes (the
// request_id and reason strings plus map and ring entries; measured with
// UUID request_ids), so the default bound is about 30 MB.
const DefaultRemember = 100_000

// TailConfig configures Tail.
type TailConfig struct {
	// Kafka holds the base client options: seed brokers, logging, security.
	// Required.
	Kafka []kgo.Opt
	// Topics names the registry's topics; the tail reads
	// Topics.Registrations. Defaults to events' default names.
	Topics events.Topics
	// Since, when positive, starts every partition at its first record
	// whose timestamp is at or after now-Since. Zero starts at the end:
	// only decisions published from now on. Negative is an error.
	Since time.Duration
	// FromBeginning starts every partition at its earliest offset. It
	// overrides Since.
	FromBeginning bool
	// Remember bounds the memory used to drop copies: Tail remembers the
	// keys of the last Remember distinct decisions (first in, first out)
	// and passes a decision to fn only if its key is not among them. A
	// copy arriving after its original was forgotten is passed again.
	// Negative passes every copy. Defaults to DefaultRemember.
	Remember int
	// Stats, if set, is kept up to date while Tail runs, so a caller can
	// see how many records were unreadable or duplicates.
	Stats *TailStats
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// TailStats counts what a Tail did with the records it read. Its fields
// may be read while Tail runs.
type TailStats struct {
	Decisions  atomic.Int64 // passed to fn
	Duplicates atomic.Int64 // copies of a remembered decision, not passed to fn
	Skipped    atomic.Int64 // unreadable records, logged as warnings and not passed to fn
}

// decisionKey identifies a decision. Copies of a decision are identical,
// and two different decisions always differ here: a copy answering a
// repeated claim names the first claim record, a request_conflict names
// its own record, and only rejections carry a reason.
type decisionKey struct {
	requestID string
	partition int32
	offset    int64
	reason    string
}

// Tail reads every partition of the registrations topic (no consumer
// group, read_committed) from the position cfg asks for, and calls fn for
// each decision, once per distinct decision (see TailConfig.Remember), in
// log order within each partition. fn runs on the caller's goroutine.
//
// Records that are not a readable decision are skipped with a warning and
// counted in cfg.Stats.Skipped; fn never sees them.
//
// Tail returns nil when ctx ends, and fn's error, unwrapped, as soon as fn
// returns one.
func Tail(ctx context.Context, cfg TailConfig, fn func(*events.Decision, *kgo.Record) error) error {
	cfg.Topics = cfg.Topics.WithDefaults()
	if len(cfg.Kafka) == 0 {
		return errors.New("registrations: TailConfig needs Kafka options")
	}
	if cfg.Since < 0 {
		return fmt.Errorf("registrations: TailConfig.Since is negative (%v)", cfg.Since)
	}
	t := newTail(cfg)
	start, err := startOffsets(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while positioning
		}
		return err
	}
	cl, err := kgo.NewClient(append(slices.Clone(cfg.Kafka),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{cfg.Topics.Registrations: start}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)...)
	if err != nil {
		return fmt.Errorf("creating registrations tail client: %w", err)
	}
	defer cl.Close()
	t.log.Info("tailing registrations", "from", startDescription(cfg), "partitions", len(start))
	return t.run(ctx, cl, fn)
}

type tail struct {
	log   *slog.Logger
	seen  *recentKeys // nil when every copy is passed on
	stats *TailStats
}

func newTail(cfg TailConfig) *tail {
	t := &tail{
		log:   cmp.Or(cfg.Logger, slog.Default()).With("component", "registrations-tail"),
		stats: cmp.Or(cfg.Stats, &TailStats{}),
	}
	if n := cmp.Or(cfg.Remember, DefaultRemember); n > 0 {
		t.seen = &recentKeys{max: n, keys: map[decisionKey]struct{}{}}
	}
	return t
}

func (t *tail) run(ctx context.Context, cl *kgo.Client, fn func(*events.Decision, *kgo.Record) error) error {
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fetches.EachError(func(topic string, p int32, err error) {
			t.log.Warn("fetch error", "topic", topic, "partition", p, "error", err)
		})
		for it := fetches.RecordIter(); !it.Done(); {
			// A fetch can hold a large backlog; checking per record keeps
			// Ctrl-C prompt.
			if ctx.Err() != nil {
				return nil
			}
			if err := t.handle(it.Next(), fn); err != nil {
				return err
			}
		}
	}
}

func (t *tail) handle(rec *kgo.Record, fn func(*events.Decision, *kgo.Record) error) error {
	d, err := events.DecodeDecision(rec)
	if err != nil {
		t.stats.Skipped.Add(1)
		t.log.Warn("skipping unreadable registrations record", "partition", rec.Partition, "offset", rec.Offset, "error", err)
		return nil
	}
	if t.seen != nil && !t.seen.add(decisionKey{d.RequestID, d.ClaimPartition, d.ClaimOffset, d.Reason}) {
		t.stats.Duplicates.Add(1)
		return nil
	}
	t.stats.Decisions.Add(1)
	return fn(d, rec)
}

// startOffsets lists, for every partition of registrations, the offset
// Tail starts at.
func startOffsets(ctx context.Context, cfg TailConfig) (map[int32]kgo.Offset, error) {
	cl, err := kgo.NewClient(cfg.Kafka...)
	if err != nil {
		return nil, fmt.Errorf("creating registrations admin client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var listed kadm.ListedOffsets
	switch {
	case cfg.FromBeginning:
		listed, err = adm.ListStartOffsets(ctx, cfg.Topics.Registrations)
	case cfg.Since > 0:
		// A partition with nothing that recent lists its end offset.
		listed, err = adm.ListOffsetsAfterMilli(ctx, time.Now().Add(-cfg.Since).UnixMilli(), cfg.Topics.Registrations)
	default:
		// "Committed" here is the last stable offset, the end a
		// read_committed reader sees. Starting at the high watermark
		// instead would step over records of a transaction still open
		// now, which become new decisions when it commits.
		listed, err = adm.ListCommittedOffsets(ctx, cfg.Topics.Registrations)
	}
	if err == nil {
		err = listed.Error()
	}
	if errors.Is(err, kerr.UnknownTopicOrPartition) {
		return nil, fmt.Errorf("listing offsets of %s (has the registry created its topics?): %w", cfg.Topics.Registrations, err)
	}
	if err != nil {
		return nil, fmt.Errorf("listing offsets of %s: %w", cfg.Topics.Registrations, err)
	}
	out := map[int32]kgo.Offset{}
	listed.Each(func(o kadm.ListedOffset) { out[o.Partition] = kgo.NewOffset().At(o.Offset) })
	return out, nil
}

func startDescription(cfg TailConfig) string {
	switch {
	case cfg.FromBeginning:
		return "beginning"
	case cfg.Since > 0:
		return "since " + cfg.Since.String()
	default:
		return "end"
	}
}

// recentKeys remembers the last max distinct keys added, first in, first
// out: a ring holds them in arrival order so the oldest is forgotten when
// a new one needs room.
type recentKeys struct {
	max  int
	keys map[decisionKey]struct{}
	ring []decisionKey
	next int // index in ring of the oldest key, once ring is full
}

// add remembers k and reports whether it was new.
func (r *recentKeys) add(k decisionKey) bool {
	if _, ok := r.keys[k]; ok {
		return false
	}
	if len(r.ring) < r.max {
		r.ring = append(r.ring, k)
	} else {
		delete(r.keys, r.ring[r.next])
		r.ring[r.next] = k
		r.next = (r.next + 1) % r.max
	}
	r.keys[k] = struct{}{}
	return true
}
