package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/usernameregistry/registry/internal/app/stack/stacktest"
	"github.com/usernameregistry/registry/internal/auth"
)

// runMain runs `registry args…` as a child process with env added.
func runMain(t *testing.T, args string, env ...string) (stderr string, code int, took time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], strings.Fields(args)...)
	cmd.Env = append(os.Environ(), append(env, runAsRegistry+"=1")...)
	var errb bytes.Buffer
	cmd.Stderr, cmd.Stdout = &errb, &errb
	start := time.Now()
	err := cmd.Run()
	took = time.Since(start)
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("running registry %s: %v", args, err)
	}
	return errb.String(), code, took
}

// TestServeRefusesToStartOpen: serve without a tokens file exits non-zero
// within a second, naming --tokens, before connecting to anything (the
// brokers and database named here do not exist: connecting would take
// far longer than a second to fail).
func TestServeRefusesToStartOpen(t *testing.T) {
	t.Parallel()
	out, code, took := runMain(t, "serve", "REGISTRY_KAFKA_BROKERS=10.255.255.1:9092",
		"DATABASE_URL=postgres://u@10.255.255.1:5432/x?connect_timeout=30", "REGISTRY_TOKENS_FILE=", "REGISTRY_INSECURE_NO_AUTH=")
	if code == 0 || !strings.Contains(out, "--tokens") || took > time.Second {
		t.Fatalf("serve without tokens: exit %d after %v, output %q; want non-zero within 1s naming --tokens", code, took, out)
	}
	t.Logf("exit %d after %v: %s", code, took.Round(time.Millisecond), strings.TrimSpace(out))

	// A malformed tokens file stops it too, naming the line.
	file := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(file, []byte("# ok\nsignup claim "+auth.HashToken("t")+"\nbroken\n"), 0o600) //nolint:errcheck
	out, code, took = runMain(t, "serve --tokens "+file, "REGISTRY_KAFKA_BROKERS=10.255.255.1:9092", "REGISTRY_INSECURE_NO_AUTH=")
	if code == 0 || !strings.Contains(out, file+" line 3") || took > time.Second {
		t.Fatalf("serve with a malformed tokens file: exit %d after %v, output %q", code, took, out)
	}
}

// TestSIGHUPReloadsTokens: on SIGHUP the API swaps its callers without
// dropping a request: a revoked token is refused, a new one accepted, and
// a caller hammering the API throughout sees no failure.
func TestSIGHUPReloadsTokens(t *testing.T) {
	const keep, revoked, added = "tok-keep-1", "tok-revoked-2", "tok-added-3"
	file := filepath.Join(t.TempDir(), "tokens")
	write := func(lines ...string) {
		if err := os.WriteFile(file+".tmp", []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(file+".tmp", file); err != nil { // atomic, as docs/deployment.md says to do it
			t.Fatal(err)
		}
	}
	line := func(name, token string) string { return name + " claim,read " + auth.HashToken(token) }
	write(line("keep", keep), line("old", revoked))
	store, err := auth.NewStore(file)
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r := stacktest.Start(t, stacktest.Options{Projectors: 1, APIs: 1, Tokens: store, Logger: log})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reloadOnHUP(ctx, store, log)
	api := r.APIs[0].URL

	code := func(token, method, path, body string) (int, error) {
		req, _ := http.NewRequest(method, api+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if c, _ := code(added, "GET", "/v1/usernames/no-one-here", ""); c != 401 {
		t.Fatalf("the token to be added, before the reload: %d", c)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var failures, requests atomic.Int64
	for i := range 4 {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				method, path, body, want := "GET", "/v1/usernames/no-one-here", "", 404
				if n%4 == 0 {
					method, path, want = "POST", "/v1/claims?wait=10s", 201
					body = fmt.Sprintf(`{"username":"hup%d%d","user_id":%q}`, i, n, uuid.NewString())
				}
				c, err := code(keep, method, path, body)
				requests.Add(1)
				if err != nil || c != want {
					failures.Add(1)
					t.Errorf("%s %s during the reload: %d %v, want %d", method, path, c, err, want)
				}
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	write(line("keep", keep), line("new", added))
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		a, _ := code(added, "GET", "/v1/usernames/no-one-here", "")
		o, _ := code(revoked, "GET", "/v1/usernames/no-one-here", "")
		if a == 404 && o == 401 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10s after SIGHUP: the added token gets %d, the revoked one %d", a, o)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	if c, _ := code(added, "POST", "/v1/claims?wait=10s", `{"username":"hupnew","user_id":"`+uuid.NewString()+`"}`); c != 201 {
		t.Errorf("a claim with the added token: %d", c)
	}
	t.Logf("%d requests during the reload, %d failed", requests.Load(), failures.Load())
	if !strings.Contains(logs.String(), "tokens file reloaded") {
		t.Error("the reload was not logged")
	}
	for _, tok := range []string{keep, revoked, added} {
		if strings.Contains(logs.String(), tok) {
			t.Errorf("token %s appears in the log", tok)
		}
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
