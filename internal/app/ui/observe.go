package ui

import (
	"slices"
	"time"

	"github.com/usernameregistry/registry/events"
)

// reasons are the rejection reasons the chart draws, in stacking order.
var reasons = events.ReasonNames()

func reasonIndex(reason string) int { return slices.Index(reasons, reason) }

// Rejection is one rejection as the page lists it.
type Rejection struct {
	Seq       uint64    `json:"seq"` // increases by one per rejection this UI observed
	At        time.Time `json:"at"`  // the decision record's timestamp, to the millisecond
	Reason    string    `json:"reason"`
	Username  string    `json:"username,omitempty"` // as typed; untrusted text
	Canonical string    `json:"canonical,omitempty"`
	Conflicts string    `json:"conflicts_with,omitempty"`
	UserID    string    `json:"user_id,omitempty"`
	Caller    string    `json:"caller,omitempty"` // the service that sent the claim
	RequestID string    `json:"request_id"`
	Detail    string    `json:"detail,omitempty"`
}

// Observe takes a decision the API node read from the registrations topic,
// with its record's timestamp. Only rejections count. A decision seen
// before (same request_id, claim_partition and claim_offset) is ignored:
// the outbox relay can publish a decision twice, and the projector
// republishes a stored decision when its claim is produced again.
//
// Observe never blocks on a page: a page too slow to take a rejection is
// disconnected, and it reconnects and reloads its history.
func (u *UI) Observe(d *events.Decision, at time.Time) {
	if d == nil || !listed(d.Outcome) {
		return
	}
	now := u.cfg.Now()
	if at.IsZero() || at.After(now) {
		// The producer's clock may run ahead of ours; counted in the
		// future, the rejection would not show until that second came.
		at = now
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.seen.add(decisionKey{d.RequestID, d.ClaimPartition, d.ClaimOffset}) {
		return
	}
	u.seq++
	r := newRejection(d, at, u.seq)
	if i := reasonIndex(d.Reason); i >= 0 { // a reason from a newer schema is listed, not charted
		u.counts.add(at.Unix(), now.Unix(), i)
	}
	u.latest.push(r)
	u.publish(r)
}

// listed reports whether the page lists decisions of outcome: rejections
// (listed and charted), and releases, renames and transfers (listed, with
// the outcome in the reason column, not charted).
func listed(outcome string) bool {
	switch outcome {
	case events.OutcomeRejected, events.OutcomeReleased, events.OutcomeRenamed, events.OutcomeTransferred:
		return true
	}
	return false
}

func newRejection(d *events.Decision, at time.Time, seq uint64) Rejection {
	reason := d.Reason
	if d.Outcome != events.OutcomeRejected {
		reason = d.Outcome
	}
	canonical := d.Canonical
	if d.Outcome == events.OutcomeRenamed {
		canonical = d.From + " → " + d.To
	}
	return Rejection{
		Seq:       seq,
		At:        at.Truncate(time.Millisecond).UTC(),
		Reason:    reason,
		Username:  d.Username,
		Canonical: canonical,
		Conflicts: d.Conflicts,
		UserID:    d.UserID,
		Caller:    d.Caller,
		RequestID: d.RequestID,
		Detail:    d.Detail,
	}
}

// history is the body of GET /ui/history.
type history struct {
	Now     int64            `json:"now"`     // the server's clock, unix milliseconds
	Start   int64            `json:"start"`   // the unix second of every series' first count
	Seconds int              `json:"seconds"` // the length of every series
	Seq     uint64           `json:"seq"`     // the last rejection counted here; newer ones come as events
	Reasons []string         `json:"reasons"` // in stacking order
	Counts  map[string][]int `json:"counts"`  // reason -> rejections per second, oldest first
	Latest  []Rejection      `json:"latest"`  // newest first, at most 100
}

func (u *UI) history() history {
	now := u.cfg.Now()
	u.mu.Lock()
	defer u.mu.Unlock()
	start, series := u.counts.series(now.Unix())
	h := history{
		Now: now.UnixMilli(), Start: start, Seconds: len(u.counts.buckets), Seq: u.seq,
		Reasons: reasons, Counts: map[string][]int{}, Latest: u.latest.list(),
	}
	for i, r := range reasons {
		h.Counts[r] = series[i]
	}
	return h
}

// counts is a ring of one bucket per second of the window.
type counts struct{ buckets []bucket }

type bucket struct {
	sec int64 // the unix second counted here; a bucket with an older one is stale
	n   []int // per reason, in the order of reasons
}

func newCounts(seconds int) *counts {
	c := &counts{buckets: make([]bucket, seconds)}
	for i := range c.buckets {
		c.buckets[i].n = make([]int, len(reasons))
	}
	return c
}

// add counts one rejection of reason i at second sec, unless sec has
// already left the window that ends at now.
func (c *counts) add(sec, now int64, i int) {
	size := int64(len(c.buckets))
	if sec <= now-size {
		return // its bucket now holds a newer second
	}
	b := &c.buckets[sec%size]
	if b.sec != sec {
		b.sec = sec
		clear(b.n)
	}
	b.n[i]++
}

// series returns, per reason, the counts of the window's seconds ending at
// now, and the first of those seconds.
func (c *counts) series(now int64) (start int64, out [][]int) {
	size := int64(len(c.buckets))
	start = now - size + 1
	out = make([][]int, len(reasons))
	for i := range out {
		out[i] = make([]int, size)
	}
	for s := start; s <= now; s++ {
		b := &c.buckets[((s%size)+size)%size]
		if b.sec != s {
			continue
		}
		for i, n := range b.n {
			out[i][s-start] = n
		}
	}
	return start, out
}

type decisionKey struct {
	requestID string
	partition int32
	offset    int64
}

// dedupeSize bounds the decisions remembered for deduplication. Copies of
// a decision follow it closely (a relay retry, a claim produced again while
// undecided), so the last 16384 rejections are plenty, in about 2 MB.
const dedupeSize = 16384

// dedupe is a set that forgets its oldest key once full.
type dedupe struct {
	set  map[decisionKey]struct{}
	ring []decisionKey
	next int // the oldest key in ring once it is full
}

func newDedupe(size int) *dedupe {
	return &dedupe{set: make(map[decisionKey]struct{}, size), ring: make([]decisionKey, 0, size)}
}

// add reports whether k is new, and remembers it.
func (d *dedupe) add(k decisionKey) bool {
	if _, ok := d.set[k]; ok {
		return false
	}
	if len(d.ring) < cap(d.ring) {
		d.ring = append(d.ring, k)
	} else {
		delete(d.set, d.ring[d.next])
		d.ring[d.next] = k
		d.next = (d.next + 1) % len(d.ring)
	}
	d.set[k] = struct{}{}
	return true
}

// maxLatest is how many rejections the page lists.
const maxLatest = 100

// latest is a ring of the last maxLatest rejections.
type latest struct {
	items [maxLatest]Rejection
	n     int // how many items hold rejections
	next  int // where the next rejection goes
}

func (l *latest) push(r Rejection) {
	l.items[l.next] = r
	l.next = (l.next + 1) % maxLatest
	l.n = min(l.n+1, maxLatest)
}

// list returns the rejections newest first.
func (l *latest) list() []Rejection {
	out := make([]Rejection, 0, l.n)
	for i := 1; i <= l.n; i++ {
		out = append(out, l.items[(l.next-i+maxLatest)%maxLatest])
	}
	return out
}
