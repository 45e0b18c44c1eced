package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestRenameSurvivesKillOfDev kills the whole `registry dev` process group
// (API, projector, embedded broker, and with them PostgreSQL) with SIGKILL
// while a rename is under way, starts dev again on the same data, and
// checks the rename ends in exactly one of its outcomes: the user holds to
// and not from. The kill points are delays after the rename was accepted
// (written to claims and acknowledged): 0 ms lands before step 1 is
// decided, the few-millisecond ones between the saga's steps (each a
// projector round of a few ms with fsync), and the longest after it has
// ended; which step each one hits varies from run to run, which is the
// point, and the outcome must not depend on it.
func TestRenameSurvivesKillOfDev(t *testing.T) {
	requirePostgres(t)
	if testing.Short() {
		t.Skip("builds and restarts registry dev several times")
	}
	bin := filepath.Join(t.TempDir(), "registry")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("building registry: %v\n%s", err, out)
	}
	dir := filepath.Join(searchableTempDir(t), "data")
	user := uuid.NewString()

	url, kill := startDevProcess(t, bin, dir)
	from := "kill0"
	if resp := postJSON(t, url+"/v1/claims", `{"username":"`+from+`","user_id":"`+user+`"}`); resp["status"] != "registered" {
		t.Fatalf("claim of %s: %v", from, resp)
	}
	for i, delay := range []time.Duration{0, 2 * time.Millisecond, 5 * time.Millisecond, 15 * time.Millisecond, 40 * time.Millisecond, 300 * time.Millisecond} {
		to := fmt.Sprintf("kill%d", i+1)
		id := uuid.NewString()
		body := `{"user_id":"` + user + `","from":"` + from + `","to":"` + to + `","request_id":"` + id + `"}`
		resp, err := http.Post(url+"/v1/renames?wait=0s", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatalf("rename %s → %s: %v", from, to, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusCreated {
			t.Fatalf("rename %s → %s: %s", from, to, resp.Status)
		}
		time.Sleep(delay)
		kill()

		url, kill = startDevProcess(t, bin, dir)
		final := awaitRename(t, url, id)
		switch final["status"] {
		case "renamed":
			from = to
		default:
			t.Fatalf("rename %s → %s killed after %s ended %v; want renamed (nothing stood in its way)", from, to, delay, final)
		}
		// Exactly one outcome: the user holds the new name, and the old
		// one is theirs only as a hold, never held by anyone.
		var held map[string]any
		getJSON(t, url+"/v1/usernames/"+to, &held)
		if held["user_id"] != user {
			t.Fatalf("after the rename killed at %s, %s is not held by the user: %v", delay, to, held)
		}
	}
	kill()
}

// startDevProcess runs the registry binary's dev command as its own process
// group and returns its API URL and a function that kills the group with
// SIGKILL and waits until PostgreSQL has gone too.
func startDevProcess(t *testing.T, bin, dir string) (string, func()) {
	t.Helper()
	cmd := exec.Command(bin, "dev", "--data", dir, "--http", "127.0.0.1:0", "--ops-addr", "", "--hold", "1h")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = nil
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting registry dev: %v", err)
	}
	killed := false
	kill := func() {
		if killed {
			return
		}
		killed = true
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		waitPostgresGone(t, dir)
	}
	t.Cleanup(kill)
	sc := bufio.NewScanner(out)
	var url string
	for sc.Scan() {
		if after, ok := strings.CutPrefix(sc.Text(), "registry API listening on "); ok {
			url = strings.TrimSpace(after)
			break
		}
	}
	if url == "" {
		t.Fatalf("registry dev printed no API address: %v", sc.Err())
	}
	go func() {
		for sc.Scan() {
		}
	}()
	waitReady(t, url)
	return url, kill
}

// waitPostgresGone waits until the postmaster of dir's cluster has exited
// (it dies with dev, whose death signal it carries), so the next start
// finds a stale pid file and not a live server.
func waitPostgresGone(t *testing.T, dir string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "postgres", "postmaster.pid"))
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(raw), "\n", 2)[0]))
	if err != nil {
		return
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("PostgreSQL (pid %d) still running 30s after dev was killed", pid)
}

// awaitRename polls GET /v1/renames/{id} until it answers a final decision.
func awaitRename(t *testing.T, url, id string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url + "/v1/renames/" + id)
		if err == nil {
			var out map[string]any
			derr := json.NewDecoder(resp.Body).Decode(&out)
			resp.Body.Close()
			if derr == nil && (resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusConflict) {
				return out
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("rename %s not decided within 60s of the restart", id)
	return nil
}
