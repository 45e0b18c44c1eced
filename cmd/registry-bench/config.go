package main

import (
	"flag"
	"io"

	"github.com/usernameregistry/registry/internal/cli"
)

// config is every setting a subcommand may use: the settings the tools
// share with the registry (cli.Common: brokers and their security,
// partitions, replication, pool size, PostgreSQL binaries, pprof) and the
// database. The README's configuration table lists both binaries' flags,
// and TestReadmeConfigurationTable in each checks its own against it.
//
// Environment variables are read in cmd (and internal/cli) only.
type config struct {
	cli.Common

	databaseURL string // DATABASE_URL; empty means the PG* variables
	httpAddr    string // REGISTRY_HTTP_ADDR
	dataDir     string
}

// flagSet declares the common flags named in want (cli.CommonFlags), with
// environment fallbacks.
func flagSet(name string, c *config, stderr io.Writer, want ...string) *flag.FlagSet {
	fs := flag.NewFlagSet("registry-bench "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	for _, w := range want {
		if !c.Declare(fs, name, w) {
			panic("registry-bench: no common flag " + w)
		}
	}
	return fs
}

func parse(fs *flag.FlagSet, args []string, c *config) error { return c.Parse(fs, args) }
