package bench

import (
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram range: 1µs to 60s, at 3 significant digits (0.1% error).
const (
	minLatencyMicros = 1
	maxLatencyMicros = 60_000_000
	latencyDigits    = 3
)

// stats collects the measured window: latencies of every HTTP answer,
// answers by code and reason, and errors by type. Transport errors have no
// latency of their own and are only counted. Its methods are safe for
// concurrent use.
type stats struct {
	mu           sync.Mutex
	latency      *hdrhistogram.Histogram // microseconds
	sent         int64
	answers      map[string]int64
	errors       map[string]int64
	errorSamples map[string]string // first message per error type
	lastDone     time.Time         // when the last measured claim ended
}

func newStats() *stats {
	return &stats{
		latency:      hdrhistogram.New(minLatencyMicros, maxLatencyMicros, latencyDigits),
		answers:      map[string]int64{},
		errors:       map[string]int64{},
		errorSamples: map[string]string{},
	}
}

// answer records an answer to a claim that was due at start.
func (s *stats) answer(a Answer, start, done time.Time) {
	us := min(max(done.Sub(start).Microseconds(), minLatencyMicros), maxLatencyMicros)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent++
	s.latency.RecordValue(us) //nolint:errcheck // us is clamped into range
	s.answers[answerLabel(a)]++
	s.lastDone = later(s.lastDone, done)
}

// failure records a claim that got no answer.
func (s *stats) failure(kind string, err error, done time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent++
	s.errors[kind]++
	if _, ok := s.errorSamples[kind]; !ok && err != nil {
		s.errorSamples[kind] = err.Error()
	}
	s.lastDone = later(s.lastDone, done)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
