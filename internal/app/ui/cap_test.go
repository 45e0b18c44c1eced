package ui

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/testenv"
)

// TestSubscriberCap: past MaxSubscribers a new stream gets 503 with
// Retry-After; once one closes, a new one is admitted.
func TestSubscriberCap(t *testing.T) {
	t.Parallel()
	u, err := New(Config{Stats: func(context.Context) (Stats, error) { return Stats{}, nil }, MaxSubscribers: 2, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(u.Handler())
	t.Cleanup(srv.Close)
	t.Cleanup(u.Close)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	open := func(ctx context.Context) *http.Response {
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/ui/events", nil)
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	first, firstCancel := context.WithCancel(ctx)
	a := open(first)
	b := open(ctx)
	defer b.Body.Close()
	if a.StatusCode != 200 || b.StatusCode != 200 {
		t.Fatalf("two streams under a cap of 2: %d %d", a.StatusCode, b.StatusCode)
	}
	c := open(ctx)
	c.Body.Close()
	if c.StatusCode != http.StatusServiceUnavailable || c.Header.Get("Retry-After") == "" {
		t.Fatalf("a third stream: %d, Retry-After %q; want 503 with Retry-After", c.StatusCode, c.Header.Get("Retry-After"))
	}
	firstCancel()
	a.Body.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		d := open(ctx)
		d.Body.Close()
		if d.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after one stream closed, a new one still gets %d", d.StatusCode)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPublishEncodesOnce: every stream is handed the same encoded bytes,
// so a rejection costs one encoding however many pages are open.
func TestPublishEncodesOnce(t *testing.T) {
	t.Parallel()
	u := newUI(t, Stats{})
	var subs []*subscriber
	for range 3 {
		s, err := u.subscribe()
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, s)
	}
	u.Observe(rejected(events.ReasonTaken, "alice", 1), t0)
	var got [][]byte
	for _, s := range subs {
		got = append(got, <-s.ch)
	}
	if &got[0][0] != &got[1][0] || &got[1][0] != &got[2][0] {
		t.Error("streams were handed different encodings of one rejection")
	}
	if want := "event: rejection\ndata: {"; string(got[0][:len(want)]) != want {
		t.Errorf("encoded event %q", got[0])
	}
}

func drain(subs []*subscriber) {
	for _, s := range subs {
		for len(s.ch) > 0 {
			<-s.ch
		}
	}
}

// BenchmarkObserveStreams is the decisions reader's cost of one rejection
// with 2,000 open streams, the encoding included (before this change each
// stream encoded every rejection itself, on its own goroutine).
func BenchmarkObserveStreams(b *testing.B) {
	u, err := New(Config{Stats: func(context.Context) (Stats, error) { return Stats{}, nil }, MaxSubscribers: 2000, Logger: testenv.Logger(b)})
	if err != nil {
		b.Fatal(err)
	}
	var subs []*subscriber
	for range 2000 {
		s, _ := u.subscribe()
		subs = append(subs, s)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		u.Observe(rejected(events.ReasonTaken, "alice", int64(i)), t0)
		if i%200 == 0 {
			drain(subs)
		}
	}
}
