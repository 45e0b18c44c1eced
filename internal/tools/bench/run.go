package bench

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// Run sends claims as cfg says, then checks every answer, and returns the
// report. It fails only on a bad Config: a server that refuses, times out
// or answers wrongly is what the report is for. Cancelling ctx stops the
// run early; the report then covers what was answered and says so.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg = cfg.WithDefaults()
	err := cfg.check()
	if err != nil {
		return nil, err
	}
	if cfg.Seed == 0 {
		cfg.Seed = rand.Uint64() | 1 // never 0, which means "pick one"
	}
	r := newRunner(cfg)
	r.log.Info("bench starting", "mode", cfg.mode(), "url", cfg.URL, "clients", cfg.Clients, "rate", cfg.Rate,
		"warmup", cfg.Warmup, "duration", cfg.Duration, "seed", cfg.Seed)
	if cfg.Rate > 0 {
		r.openLoop(ctx)
	} else {
		r.closedLoop(ctx)
	}
	rep := r.report(ctx.Err() != nil)
	r.log.Info("bench finished", "answers", rep.Answers, "throughput", rep.Throughput)
	return rep, nil
}

// runner is one run in progress.
type runner struct {
	cfg    Config
	log    *slog.Logger
	sender *sender
	work   *workload
	stats  *stats
	check  *Checker

	start       time.Time // warm-up starts
	measureFrom time.Time // warm-up ends, measuring starts
	end         time.Time // no claim is due from here on
}

func newRunner(cfg Config) *runner {
	start := time.Now()
	return &runner{
		cfg: cfg, log: cfg.Logger, sender: newSender(cfg),
		work:  newWorkload(cfg.Seed, cfg.Hot, cfg.Retry, cfg.HotNames),
		stats: newStats(), check: NewChecker(),
		start: start, measureFrom: start.Add(cfg.Warmup), end: start.Add(cfg.Warmup + cfg.Duration),
	}
}

// closedLoop runs Clients clients, each sending its next claim as soon as
// the previous one is answered. Latency counts from the actual send, which
// is all a closed loop can measure: a slow server also slows the senders,
// so this mode shows capacity, not what queueing does to latency.
func (r *runner) closedLoop(ctx context.Context) {
	var wg sync.WaitGroup
	for range r.cfg.Clients {
		wg.Go(func() {
			for ctx.Err() == nil {
				now := time.Now()
				if !now.Before(r.end) {
					return
				}
				r.do(ctx, now)
			}
		})
	}
	wg.Wait()
}

// openLoop sends claims on a fixed schedule whatever the server does. Each
// claim's latency counts from when it was due, not from when it went out,
// so time spent queueing (in the scheduler, the client's connection pool
// or the server) is measured instead of silently omitted. A scheduler
// running late does not skip claims: it sends the overdue ones at once.
func (r *runner) openLoop(ctx context.Context) {
	outstanding := make(chan struct{}, r.cfg.MaxOutstanding)
	var wg sync.WaitGroup
	defer wg.Wait()
	interval := float64(time.Second) / r.cfg.Rate
	for i := 0; ; i++ {
		due := r.start.Add(time.Duration(float64(i) * interval))
		if !due.Before(r.end) || !sleepUntil(ctx, due) {
			return
		}
		select {
		case outstanding <- struct{}{}:
			wg.Go(func() {
				defer func() { <-outstanding }()
				r.do(ctx, due)
			})
		default:
			r.notSent(due)
		}
	}
}

// sleepUntil waits until t; it reports false when ctx ends first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// do sends the next claim, due at due, and records what happened. Every
// answer goes to the check, warm-up included, since a name granted twice
// during the warm-up is as wrong as any other.
func (r *runner) do(ctx context.Context, due time.Time) {
	c := r.work.next()
	a, kind, err := r.sender.send(ctx, c)
	done := time.Now()
	if err == nil {
		r.check.Record(a)
	}
	switch {
	case due.Before(r.measureFrom):
	case err == nil:
		r.stats.answer(a, due, done)
	case ctx.Err() == nil: // an interrupted claim is not the server's fault
		r.stats.failure(kind, err, done)
	}
}

func (r *runner) notSent(due time.Time) {
	if !due.Before(r.measureFrom) {
		r.stats.failure(errNotSent, nil, due)
	}
}
