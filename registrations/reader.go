package registrations

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/kafka"
)

// ReaderConfig configures a Reader.
type ReaderConfig struct {
	// Kafka holds the base client options: seed brokers, logging, security.
	// Required.
	Kafka []kgo.Opt
	// ConsumerOpts are added to the long-lived consuming client only, not
	// to the short-lived one that lists offsets: metrics hooks, which must
	// register once, go here.
	ConsumerOpts []kgo.Opt
	// MaxWaiters bounds the subscriptions open at once; past it Subscribe
	// fails with ErrTooManyWaiters. Defaults to 10000.
	MaxWaiters int
	// Topics names the registry's topics; decisions are read from
	// Topics.Registrations. Defaults to events' default names.
	Topics events.Topics
	// Observe, when set, is called with every decision read, before it is
	// routed, on the reader's goroutine: it must not block. The live page
	// (/ui) counts rejections through it.
	Observe func(d *events.Decision, at time.Time)
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Errors from Subscribe.
var (
	ErrTooManyWaiters = errors.New("too many requests waiting for decisions")
	ErrNotPositioned  = errors.New("decisions reader is not positioned yet")
)

// subBuffer is each subscription's channel capacity. A subscriber takes
// the first decision matching its payload, so a few slots cover the
// duplicates and request_conflict decisions that can share a request_id.
const subBuffer = 8

// Reader tails the registrations topic from its end and routes every
// decision to the subscriptions for its request_id.
type Reader struct {
	cfg ReaderConfig
	log *slog.Logger

	mu         sync.Mutex
	subs       map[string][]chan *events.Decision
	nsubs      int
	client     atomic.Pointer[kgo.Client] // set while positioned
	positioned chan struct{}              // closed once positioned
	once       sync.Once
}

// WithDefaults returns cfg with every unset field that has a default set
// to it: the one place the defaults are written.
func (cfg ReaderConfig) WithDefaults() ReaderConfig {
	if cfg.MaxWaiters <= 0 {
		cfg.MaxWaiters = 10000
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	cfg.Topics = cfg.Topics.WithDefaults()
	return cfg
}

// NewReader returns a Reader; Run starts it.
func NewReader(cfg ReaderConfig) (*Reader, error) {
	if len(cfg.Kafka) == 0 {
		return nil, errors.New("registrations: ReaderConfig needs Kafka options")
	}
	cfg = cfg.WithDefaults()
	return &Reader{cfg: cfg, log: cfg.Logger.With("component", "registrations-reader"), subs: map[string][]chan *events.Decision{}, positioned: make(chan struct{})}, nil
}

// Run positions the reader at the current end of every partition, then
// routes decisions until ctx ends. Positioning first is what makes a
// subscription safe: a claim produced after Subscribe is decided after it,
// so its decision lies past the captured ends.
func (r *Reader) Run(ctx context.Context) error {
	ends, err := r.endOffsets(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while positioning: a clean stop
		}
		return err
	}
	cl, err := kgo.NewClient(append(append(append([]kgo.Opt{}, r.cfg.Kafka...), r.cfg.ConsumerOpts...),
		kgo.ConsumePartitions(ends),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)...)
	if err != nil {
		return fmt.Errorf("creating registrations client: %w", err)
	}
	defer cl.Close()
	r.client.Store(cl)
	defer r.client.Store(nil)
	r.once.Do(func() { close(r.positioned) })
	r.log.Info("positioned at the end of registrations", "partitions", len(ends[r.cfg.Topics.Registrations]))
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fetches.EachError(func(t string, p int32, err error) {
			r.log.Warn("fetch error", "topic", t, "partition", p, "error", err)
		})
		fetches.EachRecord(r.route)
	}
}

func (r *Reader) endOffsets(ctx context.Context) (map[string]map[int32]kgo.Offset, error) {
	cl, err := kgo.NewClient(r.cfg.Kafka...)
	if err != nil {
		return nil, fmt.Errorf("creating registrations admin client: %w", err)
	}
	defer cl.Close()
	ends, err := kafka.ListEndOffsets(ctx, kadm.NewClient(cl), r.cfg.Topics.Registrations)
	if err != nil {
		return nil, fmt.Errorf("listing registrations end offsets: %w", err)
	}
	out := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) { out[o.Partition] = kgo.NewOffset().At(o.Offset) })
	return map[string]map[int32]kgo.Offset{r.cfg.Topics.Registrations: out}, nil
}

func (r *Reader) route(rec *kgo.Record) {
	d, err := events.DecodeDecision(rec)
	if err != nil {
		r.log.Warn("skipping unreadable registrations record", "partition", rec.Partition, "offset", rec.Offset, "error", err)
		return
	}
	if r.cfg.Observe != nil {
		r.cfg.Observe(d, rec.Timestamp)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ch := range r.subs[d.RequestID] {
		select {
		case ch <- d:
		default: // the subscriber already has more copies than it reads
		}
	}
}

// Subscribe returns a channel receiving every decision for requestID read
// from now on, and a cancel that must be called when done.
func (r *Reader) Subscribe(requestID string) (<-chan *events.Decision, func(), error) {
	if r.client.Load() == nil {
		return nil, nil, ErrNotPositioned
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.nsubs >= r.cfg.MaxWaiters {
		return nil, nil, fmt.Errorf("%w (%d)", ErrTooManyWaiters, r.cfg.MaxWaiters)
	}
	ch := make(chan *events.Decision, subBuffer)
	r.subs[requestID] = append(r.subs[requestID], ch)
	r.nsubs++
	var once sync.Once
	return ch, func() { once.Do(func() { r.unsubscribe(requestID, ch) }) }, nil
}

func (r *Reader) unsubscribe(requestID string, ch chan *events.Decision) {
	r.mu.Lock()
	defer r.mu.Unlock()
	list := r.subs[requestID]
	for i, c := range list {
		if c == ch {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(r.subs, requestID)
	} else {
		r.subs[requestID] = list
	}
	r.nsubs--
}

// Positioned is closed once Run has positioned the reader; from then on
// Subscribe succeeds (while Run runs).
func (r *Reader) Positioned() <-chan struct{} { return r.positioned }

// Waiting returns how many subscriptions are open.
func (r *Reader) Waiting() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.nsubs
}

// Ready reports whether the reader is positioned and its broker answers.
func (r *Reader) Ready(ctx context.Context) error {
	cl := r.client.Load()
	if cl == nil {
		return ErrNotPositioned
	}
	if err := cl.Ping(ctx); err != nil {
		return fmt.Errorf("broker unreachable: %w", err)
	}
	return nil
}
