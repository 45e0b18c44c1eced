package stack_test

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"

	"github.com/usernameregistry/registry/internal/app/stack/stacktest"
)

// TestMetrics: after a win, a taken and a pending claim, /metrics shows
// them in the counters an operator watches.
func TestMetrics(t *testing.T) {
	t.Parallel()
	r := stacktest.Start(t, stacktest.Options{Projectors: 1, APIs: 1})
	api := r.APIs[0]
	want(t, "win", post(t, api, newID(), newID(), "kim"), http.StatusCreated, "registered", "", "")
	want(t, "taken", post(t, api, newID(), newID(), "KiM"), http.StatusConflict, "rejected", "taken", "kim")
	waitSettled(t, r)

	body := scrape(t, api.OpsURL+"/metrics")
	for series, min := range map[string]float64{
		`registry_claims_submitted_total{node="api-1"}`:                                                 2,
		`registry_decisions_total{node="projector-1",outcome="registered",reason=""}`:                   1,
		`registry_decisions_total{node="projector-1",outcome="rejected",reason="taken"}`:                1,
		`registry_claim_decision_seconds_count{node="api-1"}`:                                           2,
		`registry_http_request_duration_seconds_count{code="409",node="api-1",route="POST /v1/claims"}`: 1,
		`registry_projector_batch_size_count{node="projector-1"}`:                                       1,
		`registry_waiters{node="api-1"}`:                                                                0,
		`registry_projector_lag{node="projector-1",partition="`:                                         0,
	} {
		if v, ok := sample(body, series); !ok || v < min {
			t.Errorf("%s = %v (found %v), want >= %v", series, v, ok, min)
		}
	}
	for _, absent := range []string{`registry_poison_records_total{node="projector-1"} 1`, `registry_fencing_events_total{node="projector-1"} 1`} {
		if regexp.MustCompile(regexp.QuoteMeta(absent)).MatchString(body) {
			t.Errorf("unexpected %s", absent)
		}
	}
	if !regexp.MustCompile(`registry_kafka_\w+\{client="claims-producer"`).MatchString(body) {
		t.Error("no franz-go client metrics for the claims producer")
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

// sample finds the first line starting with series and returns its value.
func sample(body, series string) (float64, bool) {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + `[^ ]* (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}
