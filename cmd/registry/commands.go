package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"

	"github.com/usernameregistry/registry/internal/pprofsrv"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/usernameregistry/registry/internal/app/stack"
	"github.com/usernameregistry/registry/internal/auth"
	"github.com/usernameregistry/registry/internal/kafka"
	"github.com/usernameregistry/registry/internal/pg"
	"github.com/usernameregistry/registry/projector"
	"github.com/usernameregistry/registry/projector/migrations"
)

func runMigrate(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	var c config
	fs := flagSet("migrate", &c, stdout, "database")
	if err := parse(fs, args, &c); err != nil {
		return err
	}
	pool, err := pg.Connect(ctx, c.databaseURL, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	applied, err := migrations.Migrate(ctx, pool, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "migrations applied: %d\n", len(applied))
	return nil
}

func runServe(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	var c config
	fs := flagSet("serve", &c, stdout, "brokers", "database", "http", "partitions", "replication", "max-waiters", "db-conns", "pprof",
		"tokens", "listeners", "admin-key", "hold", "policy-version")
	if err := parse(fs, args, &c); err != nil {
		return err
	}
	// Before connecting to anything: a deployment missing its tokens file
	// fails at once, naming --tokens, instead of starting open.
	if err := c.auth.checkServe(); err != nil {
		return err
	}
	tokens, err := c.auth.loadTokens()
	if err != nil {
		return err
	}
	if _, err := c.auth.loadAdminKeys(); err != nil {
		return err
	}
	ctx, stopHUP := context.WithCancel(ctx)
	defer stopHUP() // the reload goroutine ends with the command, even when it fails (goleak found it left running)
	reloadOnHUP(ctx, tokens, log)
	if tokens == nil {
		log.Warn("serving the API WITHOUT AUTHENTICATION (--insecure-no-auth): anyone who can reach it can claim any name for any user")
	}
	if err := pprofsrv.Serve(ctx, c.PprofAddr, stdout); err != nil {
		return err
	}
	opts, pool, _, err := connect(ctx, &c, log)
	if err != nil {
		return err
	}
	defer pool.Close()
	return serveAPI(ctx, &c, tokens, opts, pool, newRegistry(), stdout, log)
}

func runProject(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	var c config
	fs := flagSet("project", &c, stdout, "brokers", "database", "partitions", "replication", "group", "db-conns", "metrics", "pprof", "session-timeout", "admin-key", "policy-version")
	if err := parse(fs, args, &c); err != nil {
		return err
	}
	if _, err := c.auth.loadAdminKeys(); err != nil {
		return err
	}
	hook, err := failpointHook()
	if err != nil {
		return err
	}
	c.failpoint = hook
	if err := pprofsrv.Serve(ctx, c.PprofAddr, stdout); err != nil {
		return err
	}
	opts, pool, partitions, err := connect(ctx, &c, log)
	if err != nil {
		return err
	}
	defer pool.Close()
	reg := newRegistry()
	g, gctx := errgroup.WithContext(ctx)
	if c.metricsAddr != "" {
		ln, err := net.Listen("tcp", c.metricsAddr)
		if err != nil {
			return fmt.Errorf("listening on %s for metrics: %w", c.metricsAddr, err)
		}
		fmt.Fprintf(stdout, "projector metrics on http://%s/metrics\n", ln.Addr())
		g.Go(func() error { return stack.Serve(gctx, ln, metricsHandler(reg)) })
	}
	// A failing projector cancels gctx, which stops the metrics server too.
	g.Go(func() error { return runProjector(gctx, &c, opts, pool, partitions, reg, log) })
	return g.Wait()
}

// newRegistry is a process's metrics registry, with Go runtime and
// process metrics next to the registry's own.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func metricsHandler(g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	return mux
}

// connect opens the database and checks (creating if missing) the topics.
// Every process does both, so none runs on a database without the schema
// or on topics that would lose claims.
func connect(ctx context.Context, c *config, log *slog.Logger) ([]kgo.Opt, *pgxpool.Pool, int32, error) {
	opts, err := c.KafkaOptions(log)
	if err != nil {
		return nil, nil, 0, err
	}
	pool, err := pg.Connect(ctx, c.databaseURL, int32(c.DBConns))
	if err != nil {
		return nil, nil, 0, err
	}
	if _, err := migrations.Migrate(ctx, pool, log); err != nil {
		pool.Close()
		return nil, nil, 0, err
	}
	if c.policy != 0 {
		if err := projector.RequirePolicyVersion(ctx, pool, c.policy); err != nil {
			pool.Close()
			return nil, nil, 0, err
		}
	}
	partitions, err := c.EnsureTopics(ctx, opts)
	if err != nil {
		pool.Close()
		return nil, nil, 0, err
	}
	return opts, pool, partitions, nil
}

// serveAPI runs the API node; the GET /metrics of its operator listener
// serves everything in reg. Nil tokens serves the API open.
func serveAPI(ctx context.Context, c *config, tokens *auth.Store, opts []kgo.Opt, pool *pgxpool.Pool, reg *prometheus.Registry, stdout io.Writer, log *slog.Logger) error {
	keys, err := c.auth.loadAdminKeys()
	if err != nil {
		return err
	}
	api, err := stack.NewAPI(stack.APIConfig{Kafka: opts, Pool: pool, MaxWaiters: c.maxWaiters, HoldPeriod: c.hold, AdminKeys: keys, Metrics: reg, Gatherer: reg, Tokens: tokens, Logger: log})
	if err != nil {
		return err
	}
	ls := stack.Listeners{APIConfig: stack.ServeConfig{TLSCertFile: c.auth.tlsCert, TLSKeyFile: c.auth.tlsKey}}
	if ls.API, err = net.Listen("tcp", c.httpAddr); err != nil {
		api.Close()
		return fmt.Errorf("listening on %s: %w", c.httpAddr, err)
	}
	if c.auth.opsAddr != "" {
		ls.Ops, err = net.Listen("tcp", c.auth.opsAddr)
		switch {
		case err != nil && c.auth.opsExplicit:
			ls.API.Close()
			api.Close()
			return fmt.Errorf("listening on %s for the operator pages (--ops-addr): %w", c.auth.opsAddr, err)
		case err != nil:
			// The default address is taken (another registry on this host,
			// or a Prometheus): the API still runs, without its pages.
			log.Warn("operator pages not served: the default --ops-addr is in use; pass --ops-addr to choose another",
				"addr", c.auth.opsAddr, "error", err)
			ls.Ops = nil
		}
	}
	scheme := "http"
	if c.auth.tlsCert != "" {
		scheme = "https"
	}
	url := fmt.Sprintf("%s://%s", scheme, ls.API.Addr())
	if c.listening != nil {
		if err := c.listening(url); err != nil {
			ls.API.Close()
			if ls.Ops != nil {
				ls.Ops.Close()
			}
			api.Close()
			return err
		}
	}
	fmt.Fprintf(stdout, "registry API listening on %s\n", url)
	if ls.Ops != nil {
		fmt.Fprintf(stdout, "operator pages on http://%s/ui and http://%s/metrics\n", ls.Ops.Addr(), ls.Ops.Addr())
	}
	return stack.RunAPI(ctx, api, ls)
}

func runProjector(ctx context.Context, c *config, opts []kgo.Opt, pool *pgxpool.Pool, partitions int32, reg prometheus.Registerer, log *slog.Logger) error {
	keys, err := c.auth.loadAdminKeys()
	if err != nil {
		return err
	}
	p, err := projector.New(projector.Config{
		AdminKeys: keys,
		Kafka:     opts, ClientOpts: func(role string) []kgo.Opt { return []kgo.Opt{kafka.Instrument(reg, role)} }, Group: c.group, Partitions: partitions,
		SessionTimeout: c.session, Failpoint: c.failpoint,
		Metrics: projector.NewMetrics(reg), Logger: log,
	}, pool)
	if err != nil {
		return err
	}
	return p.Run(ctx)
}
