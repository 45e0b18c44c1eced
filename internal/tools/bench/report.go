package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// Report is what a run measured and what the check found. Its JSON form is
// what `registry-bench bench --json` prints.
type Report struct {
	Mode        string  `json:"mode"`              // "closed" or "open"
	URL         string  `json:"url"`               // the API's base URL
	Clients     int     `json:"clients,omitempty"` // closed loop only
	Rate        float64 `json:"rate,omitempty"`    // open loop only: claims due per second
	Seed        uint64  `json:"seed"`
	Hot         float64 `json:"hot"`
	HotNames    int     `json:"hot_names"`
	Retry       float64 `json:"retry"`
	Wait        string  `json:"wait"`
	WarmupS     float64 `json:"warmup_s"`
	DurationS   float64 `json:"duration_s"`
	ElapsedS    float64 `json:"elapsed_s"` // end of warm-up to the last measured answer: Duration plus the tail
	Interrupted bool    `json:"interrupted,omitempty"`

	Requests   int64   `json:"requests"`   // claims sent (or, open loop, due) in the measured window
	Answers    int64   `json:"answers"`    // of those, answered (any HTTP status)
	Errors     int64   `json:"errors"`     // of those, not answered
	Throughput float64 `json:"throughput"` // answers per second of ElapsedS
	// Latency of the measured answers, in milliseconds: from the send in a
	// closed loop, from when the claim was due in an open loop.
	Latency      Latency           `json:"latency_ms"`
	ByAnswer     map[string]int64  `json:"answers_by_status"` // "201 registered", "409 taken", ...
	ByError      map[string]int64  `json:"errors_by_type"`    // connection_refused, timeout, not_sent, other
	ErrorSamples map[string]string `json:"error_samples,omitempty"`

	Check CheckResult `json:"check"`
}

// Latency is a latency distribution in milliseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

func (r *runner) report(interrupted bool) *Report {
	s := r.stats
	s.mu.Lock()
	defer s.mu.Unlock()
	windowEnd := later(r.end, s.lastDone)
	if interrupted {
		windowEnd = later(r.measureFrom, s.lastDone)
	}
	rep := &Report{
		Mode: r.cfg.mode(), URL: r.cfg.URL, Seed: r.cfg.Seed, Hot: r.cfg.Hot, HotNames: r.cfg.HotNames,
		Retry: r.cfg.Retry, Wait: r.cfg.Wait.String(), WarmupS: r.cfg.Warmup.Seconds(), DurationS: r.cfg.Duration.Seconds(),
		ElapsedS: windowEnd.Sub(r.measureFrom).Seconds(), Interrupted: interrupted,
		Requests: s.sent, Answers: s.latency.TotalCount(), Latency: latencyOf(s),
		ByAnswer: maps.Clone(s.answers), ByError: maps.Clone(s.errors), ErrorSamples: maps.Clone(s.errorSamples),
		Check: r.check.Result(),
	}
	rep.Errors = rep.Requests - rep.Answers
	if r.cfg.Rate > 0 {
		rep.Rate = r.cfg.Rate
	} else {
		rep.Clients = r.cfg.Clients
	}
	if rep.ElapsedS > 0 {
		rep.Throughput = float64(rep.Answers) / rep.ElapsedS
	}
	return rep
}

func latencyOf(s *stats) Latency {
	h := s.latency
	ms := func(us int64) float64 { return float64(us) / 1000 }
	if h.TotalCount() == 0 {
		return Latency{}
	}
	return Latency{
		P50: ms(h.ValueAtQuantile(50)), P90: ms(h.ValueAtQuantile(90)), P99: ms(h.ValueAtQuantile(99)),
		P999: ms(h.ValueAtQuantile(99.9)), Max: ms(h.Max()), Mean: h.Mean() / 1000,
	}
}

// WriteJSON writes r as one indented JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes r for a person.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  seed %d  hot %.2f of %d names  retry %.2f  wait %s\n", r.loop(), r.Seed, r.Hot, r.HotNames, r.Retry, r.Wait)
	fmt.Fprintf(&b, "measured %s after %s warm-up (window with tail %s)\n", secs(r.DurationS), secs(r.WarmupS), secs(r.ElapsedS))
	if r.Interrupted {
		b.WriteString("INTERRUPTED: the figures cover the part that ran\n")
	}
	fmt.Fprintf(&b, "requests %d  answered %d  errors %d  throughput %.1f answers/s\n", r.Requests, r.Answers, r.Errors, r.Throughput)
	l := r.Latency
	fmt.Fprintf(&b, "latency ms  p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f  mean %.2f\n", l.P50, l.P90, l.P99, l.P999, l.Max, l.Mean)
	writeCounts(&b, "answers", r.ByAnswer)
	writeCounts(&b, "errors", r.ByError)
	for _, k := range slices.Sorted(maps.Keys(r.ErrorSamples)) {
		fmt.Fprintf(&b, "  first %s: %s\n", k, r.ErrorSamples[k])
	}
	writeCheck(&b, r.Check)
	_, err := io.WriteString(w, b.String())
	return err
}

func (r *Report) loop() string {
	if r.Mode == "open" {
		return fmt.Sprintf("open loop %g/s against %s", r.Rate, r.URL)
	}
	return fmt.Sprintf("closed loop %d clients against %s", r.Clients, r.URL)
}

func secs(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond).String()
}

func writeCounts(b *strings.Builder, what string, counts map[string]int64) {
	if len(counts) == 0 {
		fmt.Fprintf(b, "%s: none\n", what)
		return
	}
	fmt.Fprintf(b, "%s:\n", what)
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		fmt.Fprintf(b, "  %-22s %d\n", k, counts[k])
	}
}

func writeCheck(b *strings.Builder, c CheckResult) {
	fmt.Fprintf(b, "check: %d request_ids decided, %d names granted, %d duplicate grants, %d request_ids answered inconsistently\n",
		c.Requests, c.Granted, c.DuplicateGrants, c.Inconsistent)
	for _, e := range c.Examples {
		fmt.Fprintf(b, "  %s\n", e)
	}
}
