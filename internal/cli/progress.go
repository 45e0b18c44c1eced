package cli

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Progress is told of a long phase's work: Start with the phase's name
// and its total (records), Add as records are done, Finish at the end. It
// is the shape rebuild.Progress and the generator's progress have.
type Progress interface {
	Start(phase string, total int64)
	Add(n int)
	Finish()
}

// NewProgress shows progress as a bar on stderr when it is a terminal,
// and as a log line every 10 seconds otherwise.
func NewProgress(log *slog.Logger) Progress {
	if term.IsTerminal(int(os.Stderr.Fd())) {
		return &barProgress{}
	}
	return &logProgress{log: log, every: 10 * time.Second}
}

// barProgress is a terminal progress bar: records/s, percent, ETA.
type barProgress struct{ bar *progressbar.ProgressBar }

func (b *barProgress) Start(phase string, total int64) {
	b.bar = progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription(phase),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("records"),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionFullWidth(),
		progressbar.OptionClearOnFinish(),
	)
}

func (b *barProgress) Add(n int) { b.bar.Add(n) } //nolint:errcheck // a progress bar that cannot draw is no reason to stop

func (b *barProgress) Finish() { b.bar.Finish() } //nolint:errcheck // as above

// logProgress logs the phase's progress periodically.
type logProgress struct {
	log   *slog.Logger
	every time.Duration

	mu    sync.Mutex
	phase string
	total int64
	done  int64
	start time.Time
	last  time.Time
}

func (l *logProgress) Start(phase string, total int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.phase, l.total, l.done, l.start, l.last = phase, total, 0, time.Now(), time.Now()
	l.log.Info(phase, "total", total)
}

func (l *logProgress) Add(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done += int64(n)
	if time.Since(l.last) >= l.every {
		l.last = time.Now()
		l.report("progress")
	}
}

func (l *logProgress) Finish() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.report("done")
}

func (l *logProgress) report(msg string) {
	took := time.Since(l.start)
	rate := float64(l.done) / max(took.Seconds(), 1e-9)
	args := []any{"phase", l.phase, "records", l.done, "total", l.total, "records_per_second", int64(rate)}
	if l.total > 0 {
		args = append(args, "percent", fmt.Sprintf("%.1f", 100*float64(l.done)/float64(l.total)))
	}
	if rate > 0 && l.done < l.total {
		args = append(args, "eta", (time.Duration(float64(l.total-l.done)/rate) * time.Second).Round(time.Second))
	}
	l.log.Info(msg, args...)
}
