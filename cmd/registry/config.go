package main

import (
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/usernameregistry/registry/claims"
	"github.com/usernameregistry/registry/internal/cli"
	"github.com/usernameregistry/registry/projector"
	"github.com/usernameregistry/registry/registrations"
)

// Environment variables are read in cmd (and internal/cli) only. Each
// setting has a flag whose default comes from its variable, except
// REGISTRY_LOG_LEVEL, which is read before any command parses its flags.

// config is every setting a subcommand may use: the settings shared with
// cmd/registry-bench (cli.Common: brokers and their security, partitions,
// replication, pool size, PostgreSQL binaries, pprof) and the registry's
// own.
type config struct {
	cli.Common

	databaseURL string                 // DATABASE_URL; empty means the PG* variables
	httpAddr    string                 // REGISTRY_HTTP_ADDR
	group       string                 // REGISTRY_PROJECTOR_GROUP
	maxWaiters  int                    // REGISTRY_MAX_WAITERS
	metricsAddr string                 // REGISTRY_METRICS_ADDR, project only
	session     time.Duration          // REGISTRY_SESSION_TIMEOUT, project only
	failpoint   func(string) error     // project only, in a failpoints build: see failpointHook
	dataDir     string                 // dev only
	hold        time.Duration          // REGISTRY_HOLD_PERIOD: hold period of released names
	policy      int                    // REGISTRY_POLICY_VERSION: the username policy a new database starts under; 0 is the latest
	auth        authConfig             // tokens, TLS, the operator listener, admin keys
	listening   func(url string) error // dev only: called with the API's URL once it listens
}

// flagSet declares the flags named in want, with environment fallbacks.
func flagSet(name string, c *config, stderr io.Writer, want ...string) *flag.FlagSet {
	fs := flag.NewFlagSet("registry "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	decl := map[string]func(){
		"database": func() {
			help := "PostgreSQL URL; empty uses the PG* variables (DATABASE_URL)"
			if name == "dev" {
				help = "PostgreSQL URL of an existing server; empty starts an embedded one in --data (DATABASE_URL)"
			}
			fs.StringVar(&c.databaseURL, "database", c.Or("DATABASE_URL", ""), help)
		},
		"http": func() {
			fs.StringVar(&c.httpAddr, "http", c.Or("REGISTRY_HTTP_ADDR", "127.0.0.1:8080"), "HTTP API listen address (REGISTRY_HTTP_ADDR)")
		},
		"group": func() {
			fs.StringVar(&c.group, "group", c.Or("REGISTRY_PROJECTOR_GROUP", projector.Config{}.WithDefaults().Group), "projector consumer group (REGISTRY_PROJECTOR_GROUP)")
		},
		"max-waiters": func() {
			fs.IntVar(&c.maxWaiters, "max-waiters", c.Int("REGISTRY_MAX_WAITERS", registrations.ReaderConfig{}.WithDefaults().MaxWaiters), "requests that may wait for a decision at once; more get 503 (REGISTRY_MAX_WAITERS)")
		},
		"data": func() {
			fs.StringVar(&c.dataDir, "data", "./.registry", "directory for the embedded broker's and PostgreSQL's data")
		},
		"session-timeout": func() {
			fs.DurationVar(&c.session, "session-timeout", c.Duration("REGISTRY_SESSION_TIMEOUT", projector.Config{}.WithDefaults().SessionTimeout),
				"how long the group waits for a silent projector before moving its partitions (REGISTRY_SESSION_TIMEOUT)")
		},
		"hold": func() {
			fs.DurationVar(&c.hold, "hold", c.Duration("REGISTRY_HOLD_PERIOD", claims.DefaultHoldPeriod),
				"how long a released or renamed-away name stays held for its former holder; 0 means no hold (REGISTRY_HOLD_PERIOD)")
		},
		"policy-version": func() {
			fs.IntVar(&c.policy, "policy-version", c.Int("REGISTRY_POLICY_VERSION", 0),
				"username policy version a NEW database starts under (0: the latest); refused for a database created under another version; an existing registry moves with registry policy upgrade (REGISTRY_POLICY_VERSION)")
		},
		"tokens":    func() { c.auth.tokenFlags(fs, name == "serve", &c.Env) },
		"listeners": func() { c.auth.listenerFlags(fs, &c.Env) },
		"admin-key": func() { c.auth.adminKeyFlag(fs) },
		"metrics": func() {
			fs.StringVar(&c.metricsAddr, "metrics", c.Or("REGISTRY_METRICS_ADDR", "127.0.0.1:9091"),
				"address serving the projector's GET /metrics; empty serves none (REGISTRY_METRICS_ADDR)")
		},
	}
	for _, w := range want {
		if c.Declare(fs, name, w) {
			continue
		}
		decl[w]()
	}
	return fs
}

// parse parses args into fs (cli.Common.Parse) and checks the registry's
// own settings.
func parse(fs *flag.FlagSet, args []string, c *config) error {
	if err := c.Parse(fs, args); err != nil {
		return err
	}
	c.auth.noteExplicit(fs)
	if fs.Lookup("max-waiters") != nil && c.maxWaiters < 1 {
		return fmt.Errorf("--max-waiters must be at least 1, got %d", c.maxWaiters)
	}
	return nil
}
