package projector

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/usernameregistry/registry/events"
)

// TestMetricsCountEveryReason: a decision with any reason in events.Reasons
// is counted under its own reason label, and invalid ones also as poison.
func TestMetricsCountEveryReason(t *testing.T) {
	t.Parallel()
	m := NewMetrics(nil)
	for _, r := range events.Reasons {
		m.countDecision(&events.Decision{Outcome: events.OutcomeRejected, Reason: r.Name})
		if got := value(t, m.decisions.WithLabelValues(events.OutcomeRejected, r.Name)); got != 1 {
			t.Errorf("registry_decisions_total{reason=%q} = %v, want 1", r.Name, got)
		}
	}
	if got := value(t, m.poison); got != 1 {
		t.Errorf("registry_poison_records_total = %v, want 1 (the invalid decision)", got)
	}
}

func value(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
