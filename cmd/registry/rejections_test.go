package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/testenv"
)

// rejectionsBroker gives the test a broker with the registry's topics
// and returns its address and a producer that honours record partitions.
func rejectionsBroker(t *testing.T) (string, *kgo.Client) {
	t.Helper()
	brokers, prod := testenv.Topics(t, 2)
	return strings.Join(brokers, ","), prod
}

// decision is a decision on claim record offset of partition 0: keeping
// a test's decisions in one partition keeps their order.
func decision(id, username, canonical string, offset int64, reason string) *events.Decision {
	d := &events.Decision{RequestID: id, UserID: "u-" + id, Username: username, Canonical: canonical, Outcome: events.OutcomeRejected, Reason: reason, ClaimOffset: offset, PolicyVersion: 1}
	if reason == "" {
		d.Outcome = events.OutcomeRegistered
	}
	if reason == events.ReasonTaken || reason == events.ReasonConfusable {
		d.Conflicts = canonical
	}
	return d
}

// syncBuffer is stdout for a command running in another goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Split(strings.TrimSuffix(s.b.String(), "\n"), "\n")
}

// rejections runs `registry rejections args` in the background until the
// test ends, and returns what it prints.
func rejections(t *testing.T, args ...string) *syncBuffer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- runRejections(ctx, args, out, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("registry rejections: %v", err)
		}
	})
	return out
}

// waitFor polls the output until ok holds for its lines.
func waitFor(t *testing.T, out *syncBuffer, what string, ok func([]string) bool) []string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if lines := out.lines(); ok(lines) {
			return lines
		}
	}
	t.Fatalf("no %s; output so far:\n%s", what, strings.Join(out.lines(), "\n"))
	return nil
}

// lastContains is a waitFor condition: the output ends with a line
// holding s.
func lastContains(s string) func([]string) bool {
	return func(lines []string) bool { return strings.Contains(lines[len(lines)-1], s) }
}

func TestRejectionsPrintsEachRejectionOnce(t *testing.T) {
	t.Parallel()
	brokers, prod := rejectionsBroker(t)
	taken := decision("r1", "ALICE", "alice", 1, events.ReasonTaken)
	taken.Caller = "signup-eu"
	testenv.PublishDecisions(t, prod, time.Time{},
		decision("r0", "alice", "alice", 0, ""), // a registration: never shown
		taken, taken,
		decision("r2", "аlice", "аlice", 2, events.ReasonConfusable),
		decision("r3", "has space", "", 3, events.ReasonInvalid),
	)
	out := rejections(t, "--brokers", brokers, "--from-beginning")
	lines := waitFor(t, out, "line for r3", lastContains("request=r3"))
	if len(lines) != 3 {
		t.Fatalf("want 3 lines, one per rejection:\n%s", strings.Join(lines, "\n"))
	}
	for i, want := range []string{
		"  taken             ALICE             canonical=alice  user=u-r1  request=r1  caller=signup-eu  conflicts_with=alice  claim_partition=0 claim_offset=1",
		"  confusable        аlice             user=u-r2  request=r2  conflicts_with=аlice  claim_partition=0 claim_offset=2",
		`  invalid           "has space"       user=u-r3  request=r3  claim_partition=0 claim_offset=3`,
	} {
		if !strings.HasSuffix(lines[i], want) {
			t.Errorf("line %d:\n got %q\nwant suffix %q", i, lines[i], want)
		}
		if _, err := time.Parse(time.RFC3339, strings.Fields(lines[i])[0]); err != nil {
			t.Errorf("line %d does not start with a time: %v", i, err)
		}
	}
}

func TestRejectionsFiltersByReasonAndPrefix(t *testing.T) {
	t.Parallel()
	brokers, prod := rejectionsBroker(t)
	testenv.PublishDecisions(t, prod, time.Time{},
		decision("match-canonical", "ＡＬＩＣＥ", "alice", 0, events.ReasonTaken),
		decision("match-typed", "Alicia", "", 1, events.ReasonConfusable),
		decision("other-name", "bob", "bob", 2, events.ReasonTaken),
		decision("other-reason", "alina", "alina", 3, events.ReasonReserved),
		decision("lookalike", "аlison", "аlison", 4, events.ReasonTaken), // Cyrillic а: no match
		decision("registered", "alfred", "alfred", 5, ""),
		decision("last", "ALbert", "albert", 6, events.ReasonTaken),
	)
	out := rejections(t, "--brokers", brokers, "--from-beginning", "--reason", "taken, Confusable", "--prefix", "Al")
	lines := waitFor(t, out, "line for the last decision", lastContains("request=last"))
	var got []string
	for _, l := range lines {
		for _, f := range strings.Fields(l) {
			if id, ok := strings.CutPrefix(f, "request="); ok {
				got = append(got, id)
			}
		}
	}
	if want := []string{"match-canonical", "match-typed", "last"}; !slices.Equal(got, want) {
		t.Fatalf("shown %v, want %v:\n%s", got, want, strings.Join(lines, "\n"))
	}
}

func TestRejectionsJSON(t *testing.T) {
	t.Parallel()
	brokers, prod := rejectionsBroker(t)
	ts := time.Date(2026, 11, 22, 5, 3, 16, 123_000_000, time.UTC)
	testenv.PublishDecisions(t, prod, ts,
		decision("r0", "Bob", "bob", 0, events.ReasonTaken),
		decision("r1", "<admin>", "", 1, events.ReasonInvalid),
	)
	out := rejections(t, "--brokers", brokers, "--since", "87600h", "--json")
	lines := waitFor(t, out, "two JSON lines", func(l []string) bool { return len(l) == 2 })
	for i, l := range lines {
		var got map[string]any
		if err := json.Unmarshal([]byte(l), &got); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", i, err, l)
		}
		if got["request_id"] != fmt.Sprintf("r%d", i) || got["outcome"] != "rejected" || got["claim_offset"] != float64(i) {
			t.Errorf("line %d lacks the decision's fields: %s", i, l)
		}
		if got["time"] != "2026-11-22T05:03:16.123Z" {
			t.Errorf("line %d: time %v, want the record timestamp", i, got["time"])
		}
	}
	if !strings.Contains(lines[1], `"username":"<admin>"`) {
		t.Errorf("username not kept readable: %s", lines[1])
	}
}

func TestRejectionsSummary(t *testing.T) {
	t.Parallel()
	for _, asJSON := range []bool{false, true} {
		t.Run(fmt.Sprintf("json=%v", asJSON), func(t *testing.T) {
			t.Parallel()
			brokers, prod := rejectionsBroker(t)
			testenv.PublishDecisions(t, prod, time.Time{},
				decision("a", "a", "a", 0, events.ReasonTaken),
				decision("b", "b", "b", 1, events.ReasonTaken),
				decision("c", "c", "c", 2, events.ReasonInvalid),
				decision("d", "d", "d", 3, ""), // a registration: not counted
			)
			args := []string{"--brokers", brokers, "--from-beginning", "--summary", "100ms"}
			if asJSON {
				args = append(args, "--json")
			}
			out := rejections(t, args...)
			var sums map[string]int
			waitFor(t, out, "summaries adding up to 3 rejections", func(lines []string) bool {
				sums = sumSummaries(t, lines, asJSON)
				return sums["total"] >= 3
			})
			want := map[string]int{"total": 3}
			for _, r := range events.ReasonNames() {
				want[r] = 0
			}
			want["taken"], want["invalid"] = 2, 1
			if fmt.Sprint(sums) != fmt.Sprint(want) {
				t.Fatalf("summed %v, want %v", sums, want)
			}
		})
	}
}

// sumSummaries adds up the counts of every complete summary line.
func sumSummaries(t *testing.T, lines []string, asJSON bool) map[string]int {
	sums := map[string]int{}
	for _, l := range lines {
		if l == "" {
			continue
		}
		if asJSON {
			var s struct {
				Time   time.Time      `json:"time"`
				Counts map[string]int `json:"counts"`
				Total  int            `json:"total"`
			}
			if err := json.Unmarshal([]byte(l), &s); err != nil || s.Time.IsZero() {
				t.Fatalf("summary %q: %v", l, err)
			}
			for k, v := range s.Counts {
				sums[k] += v
			}
			sums["total"] += s.Total
			continue
		}
		fields := strings.Fields(l)
		if _, err := time.Parse(time.RFC3339, fields[0]); err != nil {
			t.Fatalf("summary %q: %v", l, err)
		}
		for _, f := range fields[1:] {
			var n int
			k, v, _ := strings.Cut(f, "=")
			if _, err := fmt.Sscan(v, &n); err != nil {
				t.Fatalf("summary %q: field %q: %v", l, f, err)
			}
			sums[k] += n
		}
	}
	return sums
}

func TestRejectionsSummaryListsOnlyChosenReasons(t *testing.T) {
	t.Parallel()
	brokers, _ := rejectionsBroker(t)
	out := rejections(t, "--brokers", brokers, "--summary", "100ms", "--reason", "reserved,taken")
	lines := waitFor(t, out, "a summary", func(l []string) bool { return l[0] != "" })
	if got := strings.Join(strings.Fields(lines[0])[1:], " "); got != "taken=0 reserved=0 total=0" {
		t.Fatalf("summary %q", lines[0])
	}
}

func TestRejectionsStopsCleanly(t *testing.T) {
	t.Parallel()
	brokers, prod := rejectionsBroker(t)
	testenv.PublishDecisions(t, prod, time.Time{}, decision("a", "a", "a", 0, events.ReasonTaken))
	for _, args := range [][]string{{}, {"--from-beginning"}, {"--summary", "100ms"}} {
		ctx, cancel := context.WithCancel(context.Background())
		out := &syncBuffer{}
		done := make(chan error, 1)
		go func() {
			done <- runRejections(ctx, append([]string{"--brokers", brokers}, args...), out, slog.New(slog.DiscardHandler))
		}()
		if len(args) > 0 { // let it print before stopping it
			waitFor(t, out, "output", func(l []string) bool { return l[0] != "" })
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%v: cancelled, returned %v, want nil", args, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%v: still running 10s after cancel", args)
		}
	}
}

func TestRejectionsEndsQuietlyWhenStdoutCloses(t *testing.T) {
	t.Parallel()
	brokers, prod := rejectionsBroker(t)
	testenv.PublishDecisions(t, prod, time.Time{}, decision("a", "a", "a", 0, events.ReasonTaken))
	for _, args := range [][]string{{"--from-beginning"}, {"--summary", "100ms"}} {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		r.Close() // the reader has gone, as after `| head -1`
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = runRejections(ctx, append([]string{"--brokers", brokers}, args...), w, slog.New(slog.DiscardHandler))
		if ctx.Err() != nil {
			t.Errorf("%v: still running after 10s on a closed pipe", args)
		}
		cancel()
		w.Close()
		if err != nil {
			t.Errorf("%v: returned %v on a closed pipe, want nil", args, err)
		}
	}
}

func TestRejectionsFlagErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--reason", "taken,stolen"}, `unknown --reason "stolen": known reasons are taken, confusable, reserved, invalid, request_conflict`},
		{[]string{"--since", "15m", "--from-beginning"}, "--since and --from-beginning contradict each other"},
		{[]string{"--since", "-1m"}, "--since must be positive"},
		{[]string{"--since", "15"}, `invalid value "15" for flag -since`},
		{[]string{"--summary", "10ns"}, "--summary must be at least 100ms"},
		{[]string{"--brokers", " "}, "no Kafka brokers"},
	}
	for _, c := range cases {
		err := run(context.Background(), append([]string{"rejections"}, c.args...), &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("registry rejections %s: error %v, want one containing %q", strings.Join(c.args, " "), err, c.want)
		}
	}
}

func TestRejectionsHelp(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"rejections", "-h"}, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Usage: registry rejections", "-prefix", "canonical name or username as typed", "-summary"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := run(context.Background(), nil, &out, &bytes.Buffer{}); err != nil || !strings.Contains(out.String(), "registry rejections") {
		t.Errorf("top-level usage does not list rejections: %v\n%s", err, out.String())
	}
}
