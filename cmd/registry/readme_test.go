package main

import (
	"bytes"
	"context"
	"log/slog"
	"testing"

	"github.com/usernameregistry/registry/internal/testenv/configtable"
)

// TestReadmeConfigurationTable: README.md's configuration table lists
// every flag with an environment variable of every registry command, with
// the commands that take it, its variable and its default.
func TestReadmeConfigurationTable(t *testing.T) {
	rows := configtable.Read(t, "../../README.md")
	configtable.Unset(t, rows)
	usage := map[string]string{}
	for name, run := range commands {
		var out bytes.Buffer
		help := []string{"-h"}
		if name == "policy" {
			help = []string{"diff", "-h"} // diff and upgrade take the same settings
		}
		if err := run(context.Background(), help, &out, slog.New(slog.DiscardHandler)); err != errUsage {
			t.Fatalf("%s -h: %v", name, err)
		}
		usage[name] = out.String()
	}
	configtable.Check(t, rows, usage, benchCommands)
}

// benchCommands are the commands of cmd/registry-bench, which checks its
// own rows.
var benchCommands = []string{"bench", "baseline", "compare", "bench-projector", "generate"}
