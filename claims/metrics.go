package claims

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the API node's Prometheus metrics; docs/operations.md says
// what each means. One Metrics serves a Client and its Handler.
type Metrics struct {
	submitted        prometheus.Counter
	decisionSeconds  prometheus.Histogram
	waitTimeouts     prometheus.Counter
	overloadRefusals prometheus.Counter
	httpDuration     *prometheus.HistogramVec
}

// NewMetrics creates the metrics and registers them with reg; a nil reg
// keeps them unregistered (tests, or an embedder that does not export).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		submitted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "registry_claims_submitted_total", Help: "Claims written to the claims topic.",
		}),
		decisionSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "registry_claim_decision_seconds", Help: "Time from a claim being written to its decision reaching the API.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		waitTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "registry_wait_timeouts_total", Help: "Claims answered 202 pending because no decision arrived within ?wait.",
		}),
		overloadRefusals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "registry_overload_refusals_total", Help: "Claims refused with 503 because too many requests were waiting.",
		}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "registry_http_request_duration_seconds", Help: "HTTP request latency by route and status code.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18),
		}, []string{"route", "code"}),
	}
	if reg != nil {
		reg.MustRegister(m.submitted, m.decisionSeconds, m.waitTimeouts, m.overloadRefusals, m.httpDuration)
	}
	return m
}

// InstrumentHTTP records h's latency and status under route.
func (m *Metrics) InstrumentHTTP(route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(sw, r)
		m.httpDuration.WithLabelValues(route, strconv.Itoa(sw.code)).Observe(time.Since(start).Seconds())
	})
}

// statusWriter remembers the status code written through it. It passes
// Flush on, so server-sent events still stream through it.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
