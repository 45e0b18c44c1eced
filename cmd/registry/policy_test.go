package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestPolicyCommandsOnDev runs the policy upgrade as an operator would,
// on `registry dev` data made under version 1: claims through the API,
// `registry policy diff --to 2` (human and --json, exit 1 for the
// collisions), `registry policy upgrade --to 2` with the settings dev
// writes to registry.env, then claims under version 2.
func TestPolicyCommandsOnDev(t *testing.T) {
	requirePostgres(t)
	dir := filepath.Join(searchableTempDir(t), "data")
	url, stop := startDev(t, dir, "--policy-version", "1", "--partitions", "4")
	defer stop()
	users := map[string]string{}
	for _, name := range []string{"dog", "d0g", "κοσμος", "ΚΟΣΜΟΣ", "doge", "d0gе", "lumen11", "Iumen11"} {
		users[name] = uuid.NewString()
		if resp := postJSON(t, url+"/v1/claims", `{"username":"`+name+`","user_id":"`+users[name]+`"}`); resp["status"] != "registered" {
			t.Fatalf("version 1 refused %q: %v", name, resp)
		}
	}
	env := devEnv(t, filepath.Join(dir, "registry.env"))

	out, code := runPolicyCmd(t, env, "diff", "--to", "2", "--json")
	if code != 1 {
		t.Fatalf("policy diff --json exited %d, want 1 (holders collide):\n%s", code, out)
	}
	var rep struct {
		From, To int
		Groups   []struct{ Holders []string }
		Invalid  []struct{ Username string }
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("policy diff --json printed %q: %v", out, err)
	}
	var groups []string
	for _, g := range rep.Groups {
		groups = append(groups, strings.Join(g.Holders, "+"))
	}
	slices.Sort(groups)
	if want := []string{"Iumen11+lumen11", "d0g+dog", "d0gе+doge", "ΚΟΣΜΟΣ+κοσμος"}; rep.From != 1 || rep.To != 2 || !slices.Equal(groups, want) {
		t.Errorf("policy diff --json: from %d to %d, groups %q; want 1, 2, %q", rep.From, rep.To, groups, want)
	}
	if out, code := runPolicyCmd(t, env, "diff", "--to", "2"); code != 1 || !bytes.Contains(out, []byte(`key "dog"`)) {
		t.Errorf("policy diff: exit %d, output:\n%s", code, out)
	}
	if out, code := runPolicyCmd(t, env, "upgrade", "--to", "2"); code != 0 || !bytes.Contains(out, []byte("decides under username policy version 2")) {
		t.Fatalf("policy upgrade: exit %d, output:\n%s", code, out)
	}
	if out, code := runPolicyCmd(t, env, "upgrade", "--to", "2"); code != 0 || !bytes.Contains(out, []byte("nothing to do")) {
		t.Errorf("policy upgrade run again: exit %d, output:\n%s", code, out)
	}
	if out, code := runPolicyCmd(t, env, "diff", "--to", "2"); code != 0 {
		t.Errorf("policy diff after the upgrade: exit %d, output:\n%s", code, out)
	}
	third := uuid.NewString()
	for _, c := range []struct{ name, status, reason string }{{"dog", "rejected", "taken"}, {"κοσμος", "rejected", "taken"}, {"cat", "registered", ""}} {
		var resp map[string]any
		for range 20 { // the first writes after the upgrade may be answered policy_upgrading
			resp = postJSON(t, url+"/v1/claims", `{"username":"`+c.name+`","user_id":"`+third+`"}`)
			if resp["reason"] != "policy_upgrading" {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if resp["status"] != c.status || (c.reason != "" && resp["reason"] != c.reason) {
			t.Errorf("third user's claim of %q after the upgrade: %v", c.name, resp)
		}
	}
	var held map[string]any
	getJSON(t, url+"/v1/usernames/d0g", &held)
	if held["user_id"] != users["d0g"] || held["held_under_policy"] != 1.0 || held["grandfathered"] != true {
		t.Errorf("lookup of d0g after the upgrade: %v", held)
	}
	// Names version 2 refuses stay their holders', and the lookup says so
	// (200 held, the holder, held_under_policy, the group its shadow is
	// in), with reason invalid: what a new user's claim of it gets. It
	// answered 422 invalid, with conflicts_with naming the name itself.
	for name, group := range map[string][]string{"Iumen11": {"Iumen11", "lumen11"}, "ΚΟΣΜΟΣ": nil} {
		var av map[string]any
		code := getJSON(t, url+"/v1/usernames/"+neturl.PathEscape(name), &av)
		var with []string
		if ws, ok := av["grandfathered_with"].([]any); ok {
			for _, w := range ws {
				with = append(with, fmt.Sprint(w))
			}
		}
		slices.Sort(with)
		if code != 200 || av["status"] != "held" || av["reason"] != "invalid" || av["user_id"] != users[name] || av["username"] != name ||
			av["held_under_policy"] != 1.0 || (group != nil && (av["grandfathered"] != true || !slices.Equal(with, group))) {
			t.Errorf("lookup of %q (refused by version 2, held) after the upgrade: %d %v; want 200 held, reason invalid, its holder, held under 1, grandfathered with %q", name, code, av, group)
		}
	}
}

// devEnv reads the settings dev wrote for a shell.
func devEnv(t *testing.T, file string) []string {
	t.Helper()
	out, err := exec.Command("sh", "-c", `. "$1" && env`, "sh", file).Output()
	if err != nil {
		t.Fatalf("sourcing %s: %v", file, err)
	}
	var env []string
	for _, l := range strings.Split(string(out), "\n") {
		for _, k := range []string{"REGISTRY_KAFKA_BROKERS=", "DATABASE_URL=", "REGISTRY_ADMIN_KEY_FILE="} {
			if strings.HasPrefix(l, k) {
				env = append(env, l)
			}
		}
	}
	if len(env) != 3 {
		t.Fatalf("%s sets %q; want the brokers, the database and the admin key file", file, env)
	}
	return env
}

// runPolicyCmd runs `registry policy ARGS` as a process with env and returns
// its standard output and exit code.
func runPolicyCmd(t *testing.T, env []string, args ...string) ([]byte, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], append([]string{"policy"}, args...)...)
	cmd.Env = append(os.Environ(), append(env, runAsRegistry+"=1", "REGISTRY_LOG_LEVEL=warn")...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		if ee.ExitCode() != 1 {
			t.Logf("policy %v: stderr:\n%s", args, stderr.Bytes())
		}
		return stdout.Bytes(), ee.ExitCode()
	case err != nil:
		t.Fatalf("running policy %v: %v", args, err)
	}
	return stdout.Bytes(), 0
}

// TestPolicyUpgradeInterruptedIsAnError stops `registry policy upgrade` as
// Ctrl-C would, right after it wrote the freeze markers, and checks that the
// command reports an error (so exits 1, not 0 as a clean stop of a server
// does), and that running it again resumes and finishes.
func TestPolicyUpgradeInterruptedIsAnError(t *testing.T) {
	requirePostgres(t)
	dir := filepath.Join(searchableTempDir(t), "data")
	url, stop := startDev(t, dir, "--policy-version", "1", "--partitions", "2")
	defer stop()
	if resp := postJSON(t, url+"/v1/claims", `{"username":"dog","user_id":"`+uuid.NewString()+`"}`); resp["status"] != "registered" {
		t.Fatalf("claim of dog: %v", resp)
	}
	args := []string{"policy", "upgrade", "--to", "2"}
	for _, kv := range devEnv(t, filepath.Join(dir, "registry.env")) {
		k, v, _ := strings.Cut(kv, "=")
		flag := map[string]string{"REGISTRY_KAFKA_BROKERS": "--brokers", "DATABASE_URL": "--database", "REGISTRY_ADMIN_KEY_FILE": "--admin-key-file"}[k]
		args = append(args, flag, v)
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out := &cancelOnText{text: "freeze markers written", cancel: cancel}
	err := run(ctx, args, out, io.Discard)
	if !errors.Is(err, errInterrupted) {
		t.Fatalf("upgrade interrupted after %q: error %v, want errInterrupted\n%s", out.text, err, out.String())
	}

	var again bytes.Buffer
	if err := run(t.Context(), args, &again, io.Discard); err != nil || !strings.Contains(again.String(), "decides under username policy version 2") {
		t.Fatalf("upgrade run again: %v\n%s", err, again.String())
	}
}

// cancelOnText collects what is written to it and calls cancel once it
// holds text.
type cancelOnText struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	text   string
	cancel func()
}

func (w *cancelOnText) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.text) {
		w.cancel()
	}
	return len(p), nil
}

func (w *cancelOnText) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
