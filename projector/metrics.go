package projector

import (
	"context"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/usernameregistry/registry/events"
)

// Metrics are the projector's Prometheus metrics; docs/operations.md says
// what each means.
type Metrics struct {
	decisions     *prometheus.CounterVec
	batchSize     prometheus.Histogram
	batchDuration prometheus.Histogram
	lag           *prometheus.GaugeVec
	outboxBacklog prometheus.Gauge
	fencing       prometheus.Counter
	poison        prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg; a nil reg
// keeps them unregistered.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "registry_decisions_total", Help: "New decisions committed, by outcome and reason (re-published copies are not counted).",
		}, []string{"outcome", "reason"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "registry_projector_batch_size", Help: "Claims decided per batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14),
		}),
		batchDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "registry_projector_batch_duration_seconds", Help: "Time to decide, commit and publish one batch.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "registry_projector_lag", Help: "Claims log end offset minus the stored next offset, per partition this projector owns.",
		}, []string{"partition"}),
		outboxBacklog: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "registry_outbox_backlog", Help: "Decisions committed but not yet published (all partitions).",
		}),
		fencing: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "registry_fencing_events_total", Help: "Batches refused because a newer owner holds the partition.",
		}),
		poison: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "registry_poison_records_total", Help: "Claims records decided invalid by the projector.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.decisions, m.batchSize, m.batchDuration, m.lag, m.outboxBacklog, m.fencing, m.poison)
	}
	return m
}

// countDecision records a new decision (not a re-published copy).
func (m *Metrics) countDecision(d *events.Decision) {
	m.decisions.WithLabelValues(d.Outcome, d.Reason).Inc()
	if d.Reason == events.ReasonInvalid {
		m.poison.Inc()
	}
}

func (m *Metrics) setLag(partition int32, lag int64) {
	m.lag.WithLabelValues(strconv.Itoa(int(partition))).Set(float64(max(lag, 0)))
}

// forget drops a released partition's lag, so two projectors never both
// report one partition.
func (m *Metrics) forget(partition int32) {
	m.lag.DeleteLabelValues(strconv.Itoa(int(partition)))
}

// watch samples the outbox backlog and every owned partition's lag every
// few seconds. A batch also updates its partition's lag, but a projector
// stuck retrying commits no batch, and the lag must still show it.
func (p *Projector) watch(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		var n int64
		if err := p.pool.QueryRow(ctx, sqlOutboxBacklog).Scan(&n); err == nil {
			p.cfg.Metrics.outboxBacklog.Set(float64(n))
		}
		p.sampleLag(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sampleLag sets the lag of every owned partition from the log end and
// the stored position. Errors leave the last values: the next tick tries
// again.
func (p *Projector) sampleLag(ctx context.Context) {
	parts := p.ownedPartitions()
	if len(parts) == 0 {
		return
	}
	ends, err := kadm.NewClient(p.pub).ListEndOffsets(ctx, p.cfg.Topics.Claims)
	if err != nil {
		return
	}
	rows, err := p.pool.Query(ctx, sqlPositions, parts)
	if err != nil {
		return
	}
	var part int32
	var next int64
	pgx.ForEachRow(rows, []any{&part, &next}, func() error { //nolint:errcheck // a sample; the next tick tries again
		if end, ok := ends.Lookup(p.cfg.Topics.Claims, part); ok && end.Err == nil && p.state(part) != nil {
			p.cfg.Metrics.setLag(part, end.Offset-next)
		}
		return nil
	})
}
