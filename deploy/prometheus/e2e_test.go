package prometheus_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/usernameregistry/registry/internal/app/stack/stacktest"
	"github.com/usernameregistry/registry/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestPrometheusScrapesRegistry starts a registry and a real Prometheus
// that scrapes the API node's /metrics (which, in one process, carries the
// projector's metrics too), makes one claim rejected as taken, and waits
// for Prometheus to see it. The Prometheus also loads alerts.yml, so the
// rules are checked by the server that will run them.
func TestPrometheusScrapesRegistry(t *testing.T) {
	t.Parallel()
	bin := tool(t, "prometheus")
	r := stacktest.Start(t, stacktest.Options{Projectors: 1, APIs: 1})
	api, ops := r.APIs[0].URL, r.APIs[0].OpsURL

	if code := claim(t, api, "alice", uuid.NewString()); code != http.StatusCreated {
		t.Fatalf("first claim for alice answered %d, want 201", code)
	}
	if code := claim(t, api, "alice", uuid.NewString()); code != http.StatusConflict {
		t.Fatalf("second claim for alice answered %d, want 409 taken", code)
	}
	if code, body := get(t, ops+"/metrics"); code != http.StatusOK {
		t.Fatalf("GET %s/metrics answered %d (the API node's operator listener serves no metrics): %s", ops, code, body)
	}

	prom := startPrometheus(t, bin, strings.TrimPrefix(ops, "http://"))
	const query = `registry_decisions_total{outcome="rejected",reason="taken"}`
	deadline := time.Now().Add(60 * time.Second)
	for {
		v, err := prom.value(t, query)
		if err == nil && v >= 1 {
			t.Logf("Prometheus: %s = %v", query, v)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60s Prometheus has no %s >= 1 (last: %v, %v)\ntargets: %s\nprometheus output:\n%s",
				query, v, err, prom.targets(t), prom.out.String())
		}
		select {
		case <-prom.exited:
			t.Fatalf("prometheus exited early:\n%s", prom.out.String())
		case <-time.After(500 * time.Millisecond):
		}
	}
	prom.checkRules(t)
}

// claim asks for a name and returns the status code.
func claim(t *testing.T, api, username, userID string) int {
	t.Helper()
	body := fmt.Sprintf(`{"username":%q,"user_id":%q}`, username, userID)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, api+"/v1/claims?wait=10s", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	client := http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("POST /v1/claims: %v", err)
	}
	defer resp.Body.Close()
	reply, _ := io.ReadAll(resp.Body)
	t.Logf("claim %s by %s: %d %s", username, userID, resp.StatusCode, bytes.TrimSpace(reply))
	return resp.StatusCode
}

func get(t *testing.T, u string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// prometheus is a Prometheus server the test started.
type prometheus struct {
	url    string
	out    *syncBuffer
	exited chan struct{}
}

// startPrometheus runs bin with a config that scrapes target every second
// and loads alerts.yml, and stops it when t ends.
func startPrometheus(t *testing.T, bin, target string) *prometheus {
	t.Helper()
	dir := t.TempDir()
	rules, err := filepath.Abs("alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - %q
scrape_configs:
  - job_name: registry
    static_configs:
      - targets: [%q]
`, rules, target)
	configFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configFile, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	p := &prometheus{url: "http://" + addr, out: &syncBuffer{}, exited: make(chan struct{})}
	cmd := exec.Command(bin,
		"--config.file="+configFile,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
	)
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting prometheus: %v", err)
	}
	go func() {
		cmd.Wait() //nolint:errcheck // the exit is reported through exited and the output
		close(p.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt) //nolint:errcheck // it may have exited already
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill() //nolint:errcheck // it may have exited already
			<-p.exited
		}
	})
	return p
}

// freeAddr returns a loopback address with a port nobody listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// value runs an instant query and returns the largest sample in its
// answer.
func (p *prometheus) value(t *testing.T, query string) (float64, error) {
	t.Helper()
	var data struct {
		Result []struct {
			Value [2]any `json:"value"` // [unix time, "value"]
		} `json:"result"`
	}
	if err := p.api(t, "/api/v1/query?query="+url.QueryEscape(query), &data); err != nil {
		return 0, err
	}
	if len(data.Result) == 0 {
		return 0, fmt.Errorf("no series")
	}
	best := 0.0
	for _, r := range data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return 0, fmt.Errorf("sample %q: %w", s, err)
		}
		best = max(best, v)
	}
	return best, nil
}

// targets describes the scrape targets' health, for a failure message.
func (p *prometheus) targets(t *testing.T) string {
	t.Helper()
	var data struct {
		ActiveTargets []struct {
			ScrapeURL string `json:"scrapeUrl"`
			Health    string `json:"health"`
			LastError string `json:"lastError"`
		} `json:"activeTargets"`
	}
	if err := p.api(t, "/api/v1/targets", &data); err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%+v", data.ActiveTargets)
}

// checkRules checks that Prometheus loaded the registry group from
// alerts.yml and that no rule failed to evaluate against real metrics.
func (p *prometheus) checkRules(t *testing.T) {
	t.Helper()
	var data struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Name      string `json:"name"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := p.api(t, "/api/v1/rules", &data); err != nil {
		t.Errorf("listing rules: %v", err)
		return
	}
	rules := 0
	for _, g := range data.Groups {
		if g.Name != "registry" {
			continue
		}
		for _, r := range g.Rules {
			rules++
			if r.Health == "err" {
				t.Errorf("rule %s: %s", r.Name, r.LastError)
			}
		}
	}
	if rules == 0 {
		t.Errorf("Prometheus loaded no rules in group registry from alerts.yml: %+v", data.Groups)
	}
}

// api GETs a path of Prometheus's HTTP API and decodes its data field.
func (p *prometheus) api(t *testing.T, path string, data any) error {
	t.Helper()
	code, body := get(t, p.url+path)
	if code != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", path, code, body)
	}
	var envelope struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &envelope); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	if envelope.Status != "success" {
		return fmt.Errorf("GET %s: status %q: %s", path, envelope.Status, body)
	}
	return json.Unmarshal(envelope.Data, data)
}

// syncBuffer collects a process's output; the process writes it while
// the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
