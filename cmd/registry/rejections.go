package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"

	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/registrations"
)

const rejectionsHelp = `Usage: registry rejections [flags]

Prints claim rejections from the registrations topic as they are decided,
one line each, until interrupted. Registrations are not shown. A decision
published more than once is printed once (copies are recognised among the
last 100000 distinct decisions). Needs only Kafka, not the database.

Line format: record time (UTC), reason, username as typed, then
canonical= (when it differs from the name as typed), user=, request=,
caller= (the service that sent the claim),
conflicts_with=, detail= (when set),
claim_partition= and claim_offset= of the claim record that was decided.

Flags:
`

// knownReasons are the rejection reasons, in the order summaries list them.
var knownReasons = events.ReasonNames()

// minSummary keeps a mistyped --summary (10ns for 10s) from flooding the
// terminal.
const minSummary = 100 * time.Millisecond

// errStdoutClosed ends the command when whoever reads stdout has gone
// (`registry rejections | head -1`); it is a clean end, not a failure.
var errStdoutClosed = errors.New("stdout closed")

// rejectionsFlags are the flags of `registry rejections` besides --brokers.
type rejectionsFlags struct {
	since         time.Duration
	fromBeginning bool
	reasons       string
	prefix        string
	json          bool
	summary       time.Duration
}

func (f *rejectionsFlags) declare(fs *flag.FlagSet) {
	fs.DurationVar(&f.since, "since", 0, "start with the rejections of this last `duration`, e.g. 15m or 2h (default: only rejections decided from now on)")
	fs.BoolVar(&f.fromBeginning, "from-beginning", false, "start with the first rejection ever published")
	fs.StringVar(&f.reasons, "reason", "", "show only these `reasons`, comma-separated: "+strings.Join(knownReasons, ", "))
	fs.StringVar(&f.prefix, "prefix", "", "show only rejections whose canonical name or username as typed starts with `text`, ignoring case\n(Unicode lower-casing only: fullwidth and look-alike letters are not folded)")
	fs.BoolVar(&f.json, "json", false, "print one JSON object per line: the decision's fields plus \"time\", the record timestamp (RFC 3339)")
	fs.DurationVar(&f.summary, "summary", 0, "instead of each rejection, print counts by reason every `interval`, e.g. 10s;\nrejections count in the interval they are read in, so with --since or\n--from-beginning the first interval holds the backlog")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), rejectionsHelp)
		fs.PrintDefaults()
	}
}

func (f *rejectionsFlags) check() error {
	switch {
	case f.since < 0:
		return fmt.Errorf("--since must be positive, got %v", f.since)
	case f.since > 0 && f.fromBeginning:
		return errors.New("--since and --from-beginning contradict each other: give one")
	case f.summary < 0 || (f.summary > 0 && f.summary < minSummary):
		return fmt.Errorf("--summary must be at least %v, got %v", minSummary, f.summary)
	}
	return nil
}

func runRejections(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	var c config
	var f rejectionsFlags
	fs := flagSet("rejections", &c, stdout, "brokers")
	f.declare(fs)
	if err := parse(fs, args, &c); err != nil {
		return err
	}
	if err := f.check(); err != nil {
		return err
	}
	filter, err := newRejectionFilter(f.reasons, f.prefix)
	if err != nil {
		return err
	}
	opts, err := c.KafkaOptions(log)
	if err != nil {
		return err
	}
	defer catchSIGPIPE()()
	tail := registrations.TailConfig{Kafka: opts, Since: f.since, FromBeginning: f.fromBeginning, Logger: log}
	if f.summary > 0 {
		sp := &summaryPrinter{w: stdout, json: f.json, every: f.summary, columns: filter.columns()}
		err = summarize(ctx, tail, filter, sp)
	} else {
		lp := &linePrinter{w: stdout, json: f.json}
		err = registrations.Tail(ctx, tail, func(d *events.Decision, rec *kgo.Record) error {
			if !filter.match(d) {
				return nil
			}
			return lp.print(d, rec.Timestamp)
		})
	}
	if err == nil || errors.Is(err, errStdoutClosed) {
		return nil
	}
	return fmt.Errorf("tailing rejections from %s: %w", c.Brokers, err)
}

// catchSIGPIPE makes a write to a closed stdout fail with EPIPE instead of
// killing the process: unless SIGPIPE is being notified, Go's runtime
// exits by that signal on a broken pipe on file descriptor 1 or 2 (see
// os/signal), and the shell would report `| head -1` as a failure.
func catchSIGPIPE() (stop func()) {
	ch := make(chan os.Signal, 1) // never read: the write's EPIPE is what we act on
	signal.Notify(ch, syscall.SIGPIPE)
	return func() { signal.Stop(ch) }
}

// write writes one line, turning a closed pipe into errStdoutClosed.
func write(w io.Writer, line []byte) error {
	if _, err := w.Write(line); err != nil {
		if errors.Is(err, syscall.EPIPE) {
			return errStdoutClosed
		}
		return fmt.Errorf("writing to stdout: %w", err)
	}
	return nil
}

// rejectionFilter selects the rejections to show.
type rejectionFilter struct {
	reasons map[string]bool // empty: every reason
	prefix  string          // lower-cased; empty: every name
}

func newRejectionFilter(reasons, prefix string) (rejectionFilter, error) {
	f := rejectionFilter{reasons: map[string]bool{}, prefix: strings.ToLower(prefix)}
	for r := range strings.SplitSeq(reasons, ",") {
		r = strings.ToLower(strings.TrimSpace(r))
		if r == "" {
			continue
		}
		if !slices.Contains(knownReasons, r) {
			return f, fmt.Errorf("unknown --reason %q: known reasons are %s", r, strings.Join(knownReasons, ", "))
		}
		f.reasons[r] = true
	}
	return f, nil
}

func (f rejectionFilter) match(d *events.Decision) bool {
	if d.Outcome != events.OutcomeRejected {
		return false
	}
	if len(f.reasons) > 0 && !f.reasons[d.Reason] {
		return false
	}
	return f.prefix == "" ||
		strings.HasPrefix(strings.ToLower(d.Canonical), f.prefix) ||
		strings.HasPrefix(strings.ToLower(d.Username), f.prefix)
}

// columns are the reasons a summary always lists, even at zero.
func (f rejectionFilter) columns() []string {
	if len(f.reasons) == 0 {
		return knownReasons
	}
	return slices.DeleteFunc(slices.Clone(knownReasons), func(r string) bool { return !f.reasons[r] })
}

// linePrinter prints one line per rejection.
type linePrinter struct {
	w    io.Writer
	json bool
}

func (p *linePrinter) print(d *events.Decision, ts time.Time) error {
	if p.json {
		line, err := jsonLine(struct {
			Time string `json:"time"`
			*events.Decision
		}{ts.UTC().Format(time.RFC3339Nano), d})
		if err != nil {
			return fmt.Errorf("encoding rejection %s: %w", d.RequestID, err)
		}
		return write(p.w, line)
	}
	return write(p.w, textLine(d, ts))
}

// jsonLine encodes v as one line. HTML escaping is off: nobody embeds
// this in a page, and "<" reads better than "\u003c" in a username.
func jsonLine(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func textLine(d *events.Decision, ts time.Time) []byte {
	b := fmt.Appendf(nil, "%s  %-16s  %-16s", ts.UTC().Format(time.RFC3339), shown(d.Reason), shown(d.Username))
	if d.Canonical != "" && d.Canonical != d.Username {
		b = appendField(b, "canonical", d.Canonical)
	}
	b = appendField(b, "user", d.UserID)
	b = appendField(b, "request", d.RequestID)
	if d.Caller != "" {
		b = appendField(b, "caller", d.Caller)
	}
	if d.Conflicts != "" {
		b = appendField(b, "conflicts_with", d.Conflicts)
	}
	if d.Detail != "" {
		b = appendField(b, "detail", d.Detail)
	}
	b = fmt.Appendf(b, "  claim_partition=%d claim_offset=%d\n", d.ClaimPartition, d.ClaimOffset)
	return b
}

func appendField(b []byte, key, value string) []byte {
	return fmt.Appendf(b, "  %s=%s", key, shown(value))
}

// shown quotes s when printing it bare would mislead: it is empty, has
// spaces or quotes that blur where a field ends, or has control and
// format characters. An invalid claim's username is whatever a client
// sent, and a terminal must not interpret it.
func shown(s string) string {
	needs := s == "" || strings.ContainsFunc(s, func(r rune) bool {
		return r == '"' || r == '=' || r == '\\' || unicode.IsSpace(r) || !strconv.IsPrint(r)
	})
	if needs {
		return strconv.Quote(s)
	}
	return s
}

// summarize counts the rejections filter selects and prints the counts
// every interval. Tail runs beside the ticker so an interval with no
// rejections still prints its zeros.
func summarize(ctx context.Context, cfg registrations.TailConfig, filter rejectionFilter, p *summaryPrinter) error {
	var counts reasonCounts
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return registrations.Tail(ctx, cfg, func(d *events.Decision, _ *kgo.Record) error {
			if filter.match(d) {
				counts.add(d.Reason)
			}
			return nil
		})
	})
	g.Go(func() error {
		tick := time.NewTicker(p.every)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case now := <-tick.C:
				if err := p.print(now, counts.take()); err != nil {
					return err
				}
			}
		}
	})
	return g.Wait()
}

// reasonCounts counts rejections by reason between two summaries.
type reasonCounts struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *reasonCounts) add(reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[reason]++
}

// take returns the counts so far and starts again from zero.
func (c *reasonCounts) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.n
	c.n = nil
	return n
}

// summaryPrinter prints one summary per interval.
type summaryPrinter struct {
	w       io.Writer
	json    bool
	every   time.Duration
	columns []string // reasons always listed, zero or not
}

func (p *summaryPrinter) print(now time.Time, n map[string]int) error {
	counts := map[string]int{}
	for _, r := range p.columns {
		counts[r] = 0
	}
	maps.Copy(counts, n)
	total := 0
	for _, v := range counts {
		total += v
	}
	stamp := now.UTC().Format(time.RFC3339)
	if p.json {
		line, err := jsonLine(struct {
			Time     string         `json:"time"`
			Interval string         `json:"interval"`
			Counts   map[string]int `json:"counts"`
			Total    int            `json:"total"`
		}{stamp, p.every.String(), counts, total})
		if err != nil {
			return fmt.Errorf("encoding summary: %w", err)
		}
		return write(p.w, line)
	}
	return write(p.w, fmt.Appendf(nil, "%s  %s total=%d\n", stamp, p.countFields(counts), total))
}

// countFields lists the columns in their fixed order, then any reason
// this build does not know (a newer projector's), so the fields always
// add up to the total.
func (p *summaryPrinter) countFields(counts map[string]int) string {
	fields := make([]string, 0, len(counts))
	for _, r := range p.columns {
		fields = append(fields, fmt.Sprintf("%s=%d", r, counts[r]))
	}
	for _, r := range slices.Sorted(maps.Keys(counts)) {
		if !slices.Contains(p.columns, r) {
			fields = append(fields, fmt.Sprintf("%s=%d", shown(r), counts[r]))
		}
	}
	return strings.Join(fields, " ")
}
