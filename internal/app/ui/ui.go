// Package ui is the operators' live page on an API node: rejections per
// second by reason over a recent window, the latest rejections as they are
// decided, and the node's lag and waiters.
//
// The page, its script and its style sheet are embedded in the binary and
// load nothing from elsewhere, so it works offline and in `registry dev`.
// The node's decisions reader feeds every decision it reads to Observe; the
// page reads GET /ui/history once per connection and then follows
// GET /ui/events, a server-sent event stream.
package ui

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Stats is what the page shows besides rejections.
type Stats struct {
	Lag     int64 `json:"lag"`     // claims written but not yet decided, summed over partitions
	Waiters int   `json:"waiters"` // requests on this API node waiting for a decision
}

// Config configures a UI.
type Config struct {
	// Stats reports the current lag and waiters. Required. It is called at
	// most about once a second however many pages are open, with a context
	// that ends after 1.5s.
	Stats func(ctx context.Context) (Stats, error)
	// MaxSubscribers bounds the open GET /ui/events streams; past it a new
	// one gets 503 with Retry-After. Every rejection is encoded once and
	// the same bytes are handed to every stream, so the decisions reader's
	// cost per rejection does not grow with the pages open, but each stream
	// still holds a goroutine, a buffer and a connection. Defaults to 32,
	// more operators than watch one node at once.
	MaxSubscribers int
	// Window is how much history the chart keeps, in whole seconds, at
	// least 1s and at most 1h. Defaults to 15m.
	Window time.Duration
	// Now defaults to time.Now (tests can pin it).
	Now func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// maxWindow bounds the chart's history: every page load fetches one count
// per second and reason, and draws one bar per second.
const maxWindow = time.Hour

// UI collects rejections and serves the page. Its methods are safe for
// concurrent use.
type UI struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex // guards the fields below; held only briefly, Observe runs on the reader's goroutine
	counts *counts
	seen   *dedupe
	latest *latest
	seq    uint64 // numbers rejections, so a page can tell which events its history already holds
	subs   map[*subscriber]struct{}

	stats statsCache

	closeOnce sync.Once
	closed    chan struct{} // closed by Close: ends every stream
}

// WithDefaults returns cfg with every unset field that has a default set
// to it: the one place the defaults are written.
func (cfg Config) WithDefaults() Config {
	cfg.Window = cmp.Or(cfg.Window, 15*time.Minute)
	cfg.MaxSubscribers = cmp.Or(cfg.MaxSubscribers, 32)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	return cfg
}

// New returns a UI; serve its Handler.
func New(cfg Config) (*UI, error) {
	if cfg.Stats == nil {
		return nil, errors.New("ui: Config.Stats is required")
	}
	cfg = cfg.WithDefaults()
	if cfg.MaxSubscribers < 1 {
		return nil, fmt.Errorf("ui: MaxSubscribers %d is below 1", cfg.MaxSubscribers)
	}
	if cfg.Window < time.Second || cfg.Window > maxWindow {
		return nil, fmt.Errorf("ui: Window %v is outside 1s..%v", cfg.Window, maxWindow)
	}
	return &UI{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "ui"),
		counts: newCounts(int(cfg.Window / time.Second)),
		seen:   newDedupe(dedupeSize),
		latest: &latest{},
		subs:   map[*subscriber]struct{}{},
		closed: make(chan struct{}),
	}, nil
}

// Close ends every open event stream and refuses new ones. Call it before
// http.Server.Shutdown (or register it with RegisterOnShutdown): Shutdown
// waits for handlers to return, and a stream's handler returns only when
// its client goes, so an open page would otherwise hold Shutdown until its
// deadline. Close is idempotent; the page reconnects to the next server.
func (u *UI) Close() {
	u.closeOnce.Do(func() { close(u.closed) })
}
