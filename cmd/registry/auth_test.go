package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
