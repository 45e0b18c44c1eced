package main

import (
	"bytes"
	"context"
	"log/slog"
	"testing"

	"github.com/usernameregistry/registry/internal/testenv/configtable"
)

// TestReadmeConfigurationTable: README.md's configuration table lists
// every flag with an environment variable of every registry-bench
// command, with its variable and its default (cmd/registry's test checks
// the registry's commands against the same table).
func TestReadmeConfigurationTable(t *testing.T) {
	rows := configtable.Read(t, "../../README.md")
	configtable.Unset(t, rows)
	usage := map[string]string{}
	for name, run := range commands {
		var out bytes.Buffer
		if err := run(context.Background(), []string{"-h"}, &out, slog.New(slog.DiscardHandler)); err != errUsage {
			t.Fatalf("%s -h: %v", name, err)
		}
		usage[name] = out.String()
	}
	configtable.Check(t, rows, usage, []string{"dev", "serve", "project", "migrate", "rejections", "rebuild", "replay", "policy"})
}
