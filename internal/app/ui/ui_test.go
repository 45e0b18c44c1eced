package ui

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var t0 = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

func newUI(t *testing.T, stats Stats) *UI {
	t.Helper()
	u, err := New(Config{
		Stats:  func(context.Context) (Stats, error) { return stats, nil },
		Now:    func() time.Time { return t0 },
		Logger: testenv.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.Close)
	return u
}

func rejected(reason, username string, offset int64) *events.Decision {
	return &events.Decision{
		RequestID: "0b6f2a51-8c3e-4d7a-9e21-5f4c3b2a1d01", UserID: "c4a8e913-2f7d-4b6a-8e15-93d0f2a7b502",
		Username: username, Canonical: strings.ToLower(username), Outcome: events.OutcomeRejected,
		Reason: reason, Conflicts: strings.ToLower(username), ClaimPartition: 3, ClaimOffset: offset,
	}
}

func getHistory(t *testing.T, u *UI) history {
	t.Helper()
	rec := httptest.NewRecorder()
	u.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/ui/history", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /ui/history: %d %s", rec.Code, rec.Body)
	}
	var h history
	if err := json.Unmarshal(rec.Body.Bytes(), &h); err != nil {
		t.Fatalf("decoding history: %v", err)
	}
	return h
}

func TestNewNeedsStats(t *testing.T) {
	t.Parallel()
	if _, err := New(Config{}); err == nil {
		t.Fatal("New without Stats: no error")
	}
	if _, err := New(Config{Stats: func(context.Context) (Stats, error) { return Stats{}, nil }, Window: 2 * time.Hour}); err == nil {
		t.Fatal("New with a 2h window: no error")
	}
}

func TestHistoryCountsEachRejectionOnce(t *testing.T) {
	t.Parallel()
	u := newUI(t, Stats{})
	taken := rejected(events.ReasonTaken, "Alice", 10)
	u.Observe(taken, t0.Add(-2*time.Second))
	u.Observe(taken, t0.Add(-time.Second)) // a second copy of the same decision
	copied := *taken
	u.Observe(&copied, t0)                                                      // an equal decision in another value
	u.Observe(rejected(events.ReasonReserved, "admin", 11), t0.Add(time.Hour))  // clock ahead: counted now
	u.Observe(rejected(events.ReasonTaken, "old", 12), t0.Add(-20*time.Minute)) // before the window: listed only
	u.Observe(&events.Decision{RequestID: "r", Outcome: events.OutcomeRegistered, ClaimOffset: 13}, t0)
	u.Observe(rejected("from_the_future", "x", 14), t0) // an unknown reason: listed only

	h := getHistory(t, u)
	if h.Seconds != 900 || h.Start != t0.Unix()-899 || h.Now != t0.UnixMilli() || h.Seq != 4 {
		t.Fatalf("history header = seconds %d start %d now %d seq %d", h.Seconds, h.Start, h.Now, h.Seq)
	}
	wantOnly(t, h, events.ReasonTaken, 897, 1)
	wantOnly(t, h, events.ReasonReserved, 899, 1)
	for _, r := range []string{events.ReasonConfusable, events.ReasonInvalid, events.ReasonRequestConflict} {
		wantOnly(t, h, r, -1, 0)
	}
	var got []string
	for _, r := range h.Latest {
		got = append(got, r.Username)
	}
	if strings.Join(got, ",") != "x,old,admin,Alice" {
		t.Fatalf("latest usernames = %v, want newest first x,old,admin,Alice", got)
	}
	if a := h.Latest[3]; a.Reason != "taken" || a.Conflicts != "alice" || !a.At.Equal(t0.Add(-2*time.Second)) || a.Seq != 1 {
		t.Fatalf("Alice's rejection = %+v", a)
	}
}

// wantOnly checks that reason's series has n at index i and zeros elsewhere.
func wantOnly(t *testing.T, h history, reason string, i, n int) {
	t.Helper()
	series := h.Counts[reason]
	if len(series) != h.Seconds {
		t.Fatalf("%s: %d counts, want %d", reason, len(series), h.Seconds)
	}
	for j, c := range series {
		if (j == i && c != n) || (j != i && c != 0) {
			t.Fatalf("%s: count %d at index %d, want %d only at %d", reason, c, j, n, i)
		}
	}
}

func TestCountsLeaveTheWindow(t *testing.T) {
	t.Parallel()
	now := t0
	u, err := New(Config{Stats: func(context.Context) (Stats, error) { return Stats{}, nil }, Window: 10 * time.Second, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	u.Observe(rejected(events.ReasonInvalid, "a", 1), now)
	now = now.Add(9 * time.Second)
	wantOnly(t, u.history(), events.ReasonInvalid, 0, 1)
	now = now.Add(time.Second)
	wantOnly(t, u.history(), events.ReasonInvalid, -1, 0)
	u.Observe(rejected(events.ReasonInvalid, "b", 2), t0) // its second has left the window
	wantOnly(t, u.history(), events.ReasonInvalid, -1, 0)
}

func TestLatestKeepsTheNewest100(t *testing.T) {
	t.Parallel()
	u := newUI(t, Stats{})
	for i := range 150 {
		u.Observe(rejected(events.ReasonTaken, "n", int64(i)), t0)
	}
	h := getHistory(t, u)
	if len(h.Latest) != 100 || h.Latest[0].Seq != 150 || h.Latest[99].Seq != 51 {
		t.Fatalf("latest: %d rejections, seq %d..%d; want 100, 150..51", len(h.Latest), h.Latest[0].Seq, h.Latest[len(h.Latest)-1].Seq)
	}
	if c := h.Counts[events.ReasonTaken][899]; c != 150 {
		t.Fatalf("taken now = %d, want 150", c)
	}
}

func TestDedupeForgetsTheOldest(t *testing.T) {
	t.Parallel()
	d := newDedupe(2)
	k := func(o int64) decisionKey { return decisionKey{"r", 0, o} }
	steps := []struct {
		key  int64
		want bool
	}{{1, true}, {1, false}, {2, true}, {3, true}, {2, false}, {1, true}}
	for _, s := range steps {
		if got := d.add(k(s.key)); got != s.want {
			t.Fatalf("add(%d) = %v, want %v", s.key, got, s.want)
		}
	}
	if len(d.set) != 2 {
		t.Fatalf("dedupe holds %d keys, want 2", len(d.set))
	}
}

// sse reads server-sent events.
type sse struct{ r *bufio.Reader }

type event struct{ name, data string }

func (s sse) next() (event, error) {
	var ev event
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "" && ev.name != "":
			return ev, nil
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.data = strings.TrimPrefix(line, "data: ")
		}
	}
}

// openEvents opens GET /ui/events; the stream is subscribed once it returns.
func openEvents(t *testing.T, srv *httptest.Server) sse {
	t.Helper()
	res, err := srv.Client().Get(srv.URL + "/ui/events")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET /ui/events: %s, %s", res.Status, res.Header.Get("Content-Type"))
	}
	return sse{bufio.NewReader(res.Body)}
}

func TestEventsStreamRejectionsAndStats(t *testing.T) {
	t.Parallel()
	u := newUI(t, Stats{Lag: 7, Waiters: 3})
	srv := httptest.NewServer(u.Handler())
	t.Cleanup(srv.Close)
	t.Cleanup(u.Close) // runs first: srv.Close waits for open streams
	stream := openEvents(t, srv)

	ev, err := stream.next()
	if err != nil || ev.name != "stats" || ev.data != `{"lag":7,"waiters":3,"now":`+jsonInt(t0.UnixMilli())+`}` {
		t.Fatalf("first event = %+v, %v; want stats with lag 7, waiters 3", ev, err)
	}
	u.Observe(rejected(events.ReasonConfusable, "аlice", 5), t0)
	ev, err = stream.next()
	if err != nil || ev.name != "rejection" {
		t.Fatalf("event after Observe = %+v, %v; want a rejection", ev, err)
	}
	var r Rejection
	if err := json.Unmarshal([]byte(ev.data), &r); err != nil || r.Username != "аlice" || r.Reason != "confusable" || r.Seq != 1 {
		t.Fatalf("rejection event = %s (%v)", ev.data, err)
	}
}

func jsonInt(n int64) string { b, _ := json.Marshal(n); return string(b) }

func TestCloseEndsStreams(t *testing.T) {
	t.Parallel()
	u := newUI(t, Stats{})
	srv := httptest.NewServer(u.Handler())
	t.Cleanup(srv.Close)
	stream := openEvents(t, srv)
	if _, err := stream.next(); err != nil {
		t.Fatal(err)
	}
	u.Close()
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, stream.r)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("stream ended with %v, want a clean end", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stream still open 5s after Close")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Config.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown after Close: %v", err)
	}
}

func TestEventsRefusedAfterClose(t *testing.T) {
	t.Parallel()
	u := newUI(t, Stats{})
	u.Close()
	rec := httptest.NewRecorder()
	u.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/ui/events", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("GET /ui/events after Close: %d, want 503", rec.Code)
	}
}

func TestSlowStreamIsDropped(t *testing.T) {
	t.Parallel()
	u := newUI(t, Stats{})
	sub, err := u.subscribe()
	if err != nil {
		t.Fatal(err)
	}
	for i := range subBuffer + 1 { // nobody reads sub.ch: Observe must not block
		u.Observe(rejected(events.ReasonTaken, "n", int64(i)), t0)
	}
	select {
	case <-sub.dropped:
	default:
		t.Fatal("a stream that fell behind is still subscribed")
	}
}

func TestStatsError(t *testing.T) {
	t.Parallel()
	u, err := New(Config{Stats: func(context.Context) (Stats, error) { return Stats{Lag: 1}, errors.New("broker down") }})
	if err != nil {
		t.Fatal(err)
	}
	if ev := u.statsNow(context.Background()); ev.Error != "broker down" || ev.Lag != 0 {
		t.Fatalf("stats = %+v, want the error and no numbers", ev)
	}
}

func TestPageAndAssets(t *testing.T) {
	t.Parallel()
	h := newUI(t, Stats{}).Handler()
	for path, ctype := range map[string]string{
		"/ui":                "text/html; charset=utf-8",
		"/ui/assets/app.js":  "text/javascript; charset=utf-8",
		"/ui/assets/app.css": "text/css; charset=utf-8",
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != ctype {
			t.Errorf("GET %s: %d %q, want 200 %q", path, rec.Code, rec.Header().Get("Content-Type"), ctype)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/ui/history", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /ui/history: %d, want 405", rec.Code)
	}
}

// TestAssetsLoadNothingFromElsewhere keeps the page working offline.
func TestAssetsLoadNothingFromElsewhere(t *testing.T) {
	t.Parallel()
	files := map[string][]byte{"page.html": page}
	fs.WalkDir(assetFS, ".", func(path string, d fs.DirEntry, err error) error { //nolint:errcheck // embedded
		if !d.IsDir() {
			files[path], _ = assetFS.ReadFile(path)
		}
		return nil
	})
	for path, body := range files {
		for _, s := range []string{"http://", "https://", "//cdn", "@import"} {
			if strings.Contains(string(body), s) {
				t.Errorf("%s contains %q: the page must load only embedded assets", path, s)
			}
		}
	}
}

// TestReleasesAndRenamesAreListed: the page lists a release and a rename
// (the outcome in the reason column, a rename as from → to) without
// charting them, and still ignores registrations.
func TestReleasesAndRenamesAreListed(t *testing.T) {
	u, err := New(Config{Stats: func(context.Context) (Stats, error) { return Stats{}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	u.Observe(&events.Decision{RequestID: "a", Canonical: "lina", Outcome: events.OutcomeReleased, ClaimOffset: 1}, t0)
	u.Observe(&events.Decision{RequestID: "b", From: "lina", To: "mira", Command: events.CommandRename, Outcome: events.OutcomeRenamed, ClaimOffset: 2}, t0)
	u.Observe(&events.Decision{RequestID: "c", Outcome: events.OutcomeRegistered, ClaimOffset: 3}, t0)
	h := u.history()
	if len(h.Latest) != 2 || h.Latest[0].Reason != "renamed" || h.Latest[0].Canonical != "lina → mira" || h.Latest[1].Reason != "released" {
		t.Fatalf("latest = %+v", h.Latest)
	}
	for r, series := range h.Counts {
		for _, n := range series {
			if n != 0 {
				t.Errorf("%s charted %d", r, n)
			}
		}
	}
}
