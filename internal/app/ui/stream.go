package ui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

const (
	statsEvery     = 2 * time.Second
	heartbeatEvery = 15 * time.Second // below the idle timeouts of common proxies
	writeTimeout   = 10 * time.Second // a client that takes no bytes for this long is gone
	statsTimeout   = 1500 * time.Millisecond
	subBuffer      = 256 // rejections a stream may fall behind before it is dropped
	retryMillis    = 2000
)

// errTooMany refuses a stream past Config.MaxSubscribers.
var errTooMany = errors.New("too many live pages are open")

// subscriber is one open event stream.
type subscriber struct {
	ch      chan []byte   // encoded "rejection" events, shared by every stream: never modified
	dropped chan struct{} // closed when the stream fell behind; the page reconnects
}

func (u *UI) subscribe() (*subscriber, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	select {
	case <-u.closed:
		return nil, errors.New("the UI is closed")
	default:
	}
	if len(u.subs) >= u.cfg.MaxSubscribers {
		return nil, errTooMany
	}
	s := &subscriber{ch: make(chan []byte, subBuffer), dropped: make(chan struct{})}
	u.subs[s] = struct{}{}
	return s, nil
}

func (u *UI) unsubscribe(s *subscriber) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.subs, s)
}

// publish encodes r once and hands the same bytes to every stream without
// waiting; u.mu is held. A stream whose buffer is full is dropped rather
// than waited for: Observe runs on the decisions reader, which must never
// stall behind a page.
func (u *UI) publish(r Rejection) {
	if len(u.subs) == 0 {
		return
	}
	ev, err := encodeEvent("rejection", r)
	if err != nil {
		u.log.Error("encoding a rejection for the live page", "error", err)
		return
	}
	for s := range u.subs {
		select {
		case s.ch <- ev:
		default:
			delete(u.subs, s)
			close(s.dropped)
			u.log.Warn("dropping a /ui/events stream that fell behind")
		}
	}
}

// serveEvents streams rejections and stats until the client goes, the
// stream falls behind, or Close is called.
func (u *UI) serveEvents(w http.ResponseWriter, r *http.Request) {
	sub, err := u.subscribe()
	if errors.Is(err, errTooMany) {
		w.Header().Set("Retry-After", "10")
		http.Error(w, fmt.Sprintf("%s (at most %d); close one and reload", err, u.cfg.MaxSubscribers), http.StatusServiceUnavailable)
		return
	}
	if err != nil {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	defer u.unsubscribe(sub)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no") // nginx would otherwise hold events back
	w.WriteHeader(http.StatusOK)
	s := newStream(w)
	defer s.clearDeadline()
	if s.write(fmt.Sprintf("retry: %d\n\n", retryMillis)) != nil ||
		s.event("stats", u.statsNow(r.Context())) != nil {
		return
	}
	u.pump(r.Context(), sub, s)
}

func (u *UI) pump(ctx context.Context, sub *subscriber, s *stream) {
	stats := time.NewTicker(statsEvery)
	defer stats.Stop()
	heartbeat := time.NewTicker(heartbeatEvery)
	defer heartbeat.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return
		case <-u.closed:
			return
		case <-sub.dropped:
			return
		case ev := <-sub.ch:
			err = s.writeBytes(batch(ev, sub.ch))
		case <-stats.C:
			err = s.event("stats", u.statsNow(ctx))
		case <-heartbeat.C:
			err = s.write(": heartbeat\n\n")
		}
		if err != nil {
			return
		}
	}
}

// batch appends to first the events already waiting in ch, without
// waiting for more, so a busy stream takes one write and one flush for
// many rejections instead of one each. first is shared: it is copied.
func batch(first []byte, ch <-chan []byte) []byte {
	if len(ch) == 0 {
		return first
	}
	out := append(make([]byte, 0, len(first)*(len(ch)+1)), first...)
	for range len(ch) {
		out = append(out, <-ch...)
	}
	return out
}

// stream writes server-sent events, each flushed at once.
type stream struct {
	w  io.Writer
	rc *http.ResponseController
}

func newStream(w http.ResponseWriter) *stream {
	return &stream{w: w, rc: http.NewResponseController(w)}
}

func (s *stream) event(name string, v any) error {
	ev, err := encodeEvent(name, v)
	if err != nil {
		return err
	}
	return s.writeBytes(ev)
}

// encodeEvent is one server-sent event whose data is v as JSON.
func encodeEvent(name string, v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, "event: %s\ndata: %s\n\n", name, data), nil
}

func (s *stream) write(text string) error { return s.writeBytes([]byte(text)) }

func (s *stream) writeBytes(b []byte) error {
	// The deadline catches a client that stopped reading without closing;
	// servers that do not support deadlines rely on the heartbeat failing.
	_ = s.rc.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := s.w.Write(b); err != nil {
		return err
	}
	return s.rc.Flush()
}

// clearDeadline leaves the connection as the server set it, for the next
// request on it.
func (s *stream) clearDeadline() { _ = s.rc.SetWriteDeadline(time.Time{}) }

// statsEvent is the data of a "stats" event.
type statsEvent struct {
	Stats
	Now   int64  `json:"now"`             // the server's clock, unix milliseconds, so the page's chart follows it
	Error string `json:"error,omitempty"` // why Stats failed; Lag and Waiters are then zero
}

// statsCache shares one Stats call among all open pages.
type statsCache struct {
	mu  sync.Mutex
	at  time.Time // when val was fetched, by the monotonic clock
	val statsEvent
}

const statsMaxAge = time.Second

func (u *UI) statsNow(ctx context.Context) statsEvent {
	c := &u.stats
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < statsMaxAge {
		return c.val
	}
	callCtx, cancel := context.WithTimeout(ctx, statsTimeout)
	defer cancel()
	st, err := u.cfg.Stats(callCtx)
	ev := statsEvent{Stats: st, Now: u.cfg.Now().UnixMilli()}
	if err != nil {
		ev = statsEvent{Now: ev.Now, Error: err.Error()}
		u.log.Debug("stats unavailable", "error", err)
	}
	if ctx.Err() == nil { // not when our own client left mid-call: the other pages would show its error
		c.at, c.val = time.Now(), ev
	}
	return ev
}
