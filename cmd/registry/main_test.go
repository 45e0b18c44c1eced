package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/usernameregistry/registry/internal/cli"
)

func TestCommandLineErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"policy", "frob"}, `unknown policy command "frob"`},
		{[]string{"policy", "diff"}, "--to is required"},
		{[]string{"serve", "--nope"}, "flag provided but not defined: -nope"},
		{[]string{"serve", "extra"}, `unexpected argument "extra"`},
		{[]string{"project", "--partitions", "0"}, "--partitions must be between 1 and 10000"},
		{[]string{"serve", "--max-waiters", "0"}, "--max-waiters must be at least 1"},
		{[]string{"serve", "--insecure-no-auth", "--brokers", " , "}, "no Kafka brokers"},
		{[]string{"serve", "--brokers", "127.0.0.1:1"}, "needs --tokens FILE"},
		{[]string{"serve", "--tokens", "/nonexistent/tokens", "--insecure-no-auth"}, "contradict"},
		{[]string{"serve", "--tokens", "/nonexistent/tokens"}, "reading tokens file"},
		{[]string{"serve", "--insecure-no-auth", "--tls-cert", "c.pem"}, "--tls-cert and --tls-key go together"},
		{[]string{"dev", "--tls-key", "k.pem"}, "--tls-cert and --tls-key go together"},
		{[]string{"migrate", "--database", "postgres://127.0.0.1:1/x?connect_timeout=1"}, "connecting to PostgreSQL at 127.0.0.1:1"},
	}
	for _, c := range cases {
		var out, errw bytes.Buffer
		err := run(context.Background(), c.args, &out, &errw)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("registry %s: error %v, want one containing %q", strings.Join(c.args, " "), err, c.want)
		}
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{nil, {"help"}, {"-h"}, {"dev", "-h"}, {"policy"}, {"policy", "-h"}, {"policy", "upgrade", "-h"}} {
		var out, errw bytes.Buffer
		if err := run(context.Background(), args, &out, &errw); err != nil {
			t.Errorf("registry %v: %v", args, err)
		}
		if !strings.Contains(out.String()+errw.String(), "registry") {
			t.Errorf("registry %v printed no help: %q %q", args, out.String(), errw.String())
		}
	}
}

func TestMalformedEnvironmentIsAnError(t *testing.T) {
	t.Setenv("REGISTRY_PARTITIONS", "twelve")
	err := run(context.Background(), []string{"project"}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), `REGISTRY_PARTITIONS="twelve" is not a whole number`) {
		t.Fatalf("got %v", err)
	}
}

// TestOneShotInterruptedFails checks the exit rule of one-shot commands: a
// server stopped by its context ends cleanly (cli.Run returns nil, exit 0),
// but a one-shot command stopped before it finished returns errStopped
// (exit 1), and one that finished returns what it returned.
func TestOneShotInterruptedFails(t *testing.T) {
	stopped := func(ctx context.Context, _ []string, _ io.Writer, _ *slog.Logger) error {
		<-ctx.Done()
		return fmt.Errorf("rebuilding: %w", ctx.Err())
	}
	finished := func(context.Context, []string, io.Writer, *slog.Logger) error { return nil }
	cmds := map[string]cli.Command{"server": stopped, "oneshot": oneShot(stopped), "done": oneShot(finished)}
	for _, c := range []struct {
		name string
		want error
	}{{"server", nil}, {"oneshot", errStopped}, {"done", nil}} {
		ctx, cancel := context.WithCancel(t.Context())
		if c.name != "done" {
			cancel()
		}
		err := cli.Run(ctx, "usage", cmds, []string{c.name}, io.Discard, io.Discard)
		cancel()
		if (c.want == nil && err != nil) || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("%s: cli.Run returned %v, want %v", c.name, err, c.want)
		}
	}
}
