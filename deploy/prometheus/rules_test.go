// Package prometheus_test checks the Prometheus files in deploy/prometheus:
// the alerting rules against their promtool unit tests, and a real
// Prometheus scraping a registry started in process.
package prometheus_test

import (
	"os"
	"os/exec"
	"testing"
)

// TestAlertRules runs promtool over alerts.yml, its unit tests in
// alerts_test.yml and the example prometheus.yml.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	promtool := tool(t, "promtool")
	for _, args := range [][]string{
		{"check", "rules", "alerts.yml"},
		{"test", "rules", "alerts_test.yml"},
		// Checks the syntax and that alerts.yml loads; the placeholder
		// targets are not resolved.
		{"check", "config", "prometheus.yml"},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		t.Logf("promtool %v:\n%s", args, out)
		if err != nil {
			t.Errorf("promtool %v: %v", args, err)
		}
	}
}

// tool returns the path of a Prometheus binary. A missing one fails the
// test under CI=true and skips it elsewhere, like testenv's dependencies.
func tool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	msg := name + " is not on PATH: install Debian's prometheus package (apt-get install prometheus), which has both prometheus and promtool"
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true and a test dependency is missing: " + msg)
	}
	t.Skip("test dependency missing: " + msg)
	return ""
}
