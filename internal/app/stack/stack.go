// Package stack wires the registry's API node: the claims producer, the
// decisions reader, the Go client and the HTTP API. `registry dev` and
// `registry serve` and the end-to-end tests all build it here, so they run
// the same wiring. (A projector node is just projector.New and Run.)
package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims"
	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/app/ui"
	"github.com/usernameregistry/registry/internal/kafka"
	"github.com/usernameregistry/registry/projector"
	"github.com/usernameregistry/registry/registrations"
)

// APIConfig configures an API node.
type APIConfig struct {
	// Kafka holds the base client options. Required.
	Kafka []kgo.Opt
	// Pool reads the projection for lookups and retries. Required.
	Pool *pgxpool.Pool
	// Topics names the registry's topics. Defaults to events' default
	// names.
	Topics events.Topics
	// MaxWaiters bounds requests waiting for a decision. Defaults to
	// registrations.ReaderConfig's default.
	MaxWaiters int
	// HoldPeriod is the hold period releases and renames carry; 0 means
	// none (see claims.ClientConfig.HoldPeriod).
	HoldPeriod time.Duration
	// Metrics is where the node registers its metrics; nil registers none.
	Metrics prometheus.Registerer
	// Gatherer, when set, is served at GET /metrics. In one process it
	// gathers every part's metrics (registry dev serves the projector's
	// here too).
	Gatherer prometheus.Gatherer
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// API is a running API node's parts.
type API struct {
	Handler  http.Handler
	Client   *claims.Client
	Reader   *registrations.Reader
	producer *kgo.Client
	pool     *pgxpool.Pool
	ui       *ui.UI

	claimsTopic string
}

// NewAPI builds an API node. Run starts its decisions reader.
func NewAPI(cfg APIConfig) (*API, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Topics = cfg.Topics.WithDefaults()
	producer, err := kgo.NewClient(append(instrumented(cfg.Kafka, cfg.Metrics, "claims-producer"),
		kgo.DefaultProduceTopic(cfg.Topics.Claims),
		kgo.ProducerLinger(0), // a waiting request must not wait for a batch to fill
		// A claim not acknowledged in 10s fails with 503 (retry with the
		// same request_id) rather than hold the request indefinitely.
		kgo.RecordDeliveryTimeout(10*time.Second),
	)...)
	if err != nil {
		return nil, fmt.Errorf("creating claims producer: %w", err)
	}
	a, err := assemble(cfg, producer)
	if err != nil {
		producer.Close()
		return nil, err
	}
	return a, nil
}

// instrumented returns opts plus franz-go metrics for the one long-lived
// client in role.
func instrumented(opts []kgo.Opt, reg prometheus.Registerer, role string) []kgo.Opt {
	out := append([]kgo.Opt{}, opts...)
	if reg != nil {
		out = append(out, kafka.Instrument(reg, role))
	}
	return out
}

func assemble(cfg APIConfig, producer *kgo.Client) (*API, error) {
	a := &API{producer: producer, pool: cfg.Pool, claimsTopic: cfg.Topics.Claims}
	live, err := ui.New(ui.Config{Stats: a.stats, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	reader, err := registrations.NewReader(registrations.ReaderConfig{
		Kafka: cfg.Kafka, ConsumerOpts: instrumented(nil, cfg.Metrics, "registrations-reader"), MaxWaiters: cfg.MaxWaiters, Topics: cfg.Topics,
		Observe: live.Observe, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	a.Reader, a.ui = reader, live
	metrics := claims.NewMetrics(cfg.Metrics)
	if cfg.Metrics != nil {
		cfg.Metrics.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "registry_waiters", Help: "Requests on this API node waiting for a decision.",
		}, func() float64 { return float64(reader.Waiting()) }))
	}
	store := projector.NewStore(cfg.Pool)
	client, err := claims.NewClient(claims.ClientConfig{Producer: producer, Decisions: reader, Topics: cfg.Topics, Ledger: store, HoldPeriod: cfg.HoldPeriod, Metrics: metrics, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	ready := func(ctx context.Context) error {
		if err := reader.Ready(ctx); err != nil {
			return err
		}
		if err := store.Ping(ctx); err != nil {
			return fmt.Errorf("database unreachable: %w", err)
		}
		return nil
	}
	h, err := claims.NewHandler(claims.HandlerConfig{Client: client, Directory: store, Ready: ready, Metrics: metrics, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/", h)
	if cfg.Gatherer != nil {
		mux.Handle("GET /metrics", metrics.InstrumentHTTP("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{})))
	}
	page := metrics.InstrumentHTTP("/ui", live.Handler())
	mux.Handle("/ui", page)
	mux.Handle("/ui/", page)
	a.Handler, a.Client = mux, client
	return a, nil
}

// stats feeds the live page: lag over all partitions and this node's
// waiters.
func (a *API) stats(ctx context.Context) (ui.Stats, error) {
	lag, err := a.Lag(ctx)
	return ui.Stats{Lag: lag, Waiters: a.Reader.Waiting()}, err
}

// Lag is how many claims are written but not yet decided, over all
// partitions: the claims log end offsets minus the stored next offsets.
func (a *API) Lag(ctx context.Context) (int64, error) {
	ends, err := kadm.NewClient(a.producer).ListEndOffsets(ctx, a.claimsTopic)
	if err != nil {
		return 0, fmt.Errorf("listing claims end offsets: %w", err)
	}
	var end, decided int64
	ends.Each(func(o kadm.ListedOffset) { end += o.Offset })
	if err := a.pool.QueryRow(ctx, `SELECT coalesce(sum(next_offset), 0) FROM claim_partitions`).Scan(&decided); err != nil {
		return 0, fmt.Errorf("reading decided offsets: %w", err)
	}
	return max(end-decided, 0), nil
}

// Run runs the decisions reader until ctx ends.
func (a *API) Run(ctx context.Context) error { return a.Reader.Run(ctx) }

// Close releases the producer; call it after Run returned.
func (a *API) Close() { a.producer.Close() }

// Serve serves h on ln until ctx ends, then stops accepting and lets
// requests in flight finish (up to 35s, longer than the longest wait).
// onShutdown runs as shutdown begins: it ends streams that would
// otherwise hold the shutdown for the whole grace period.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, onShutdown ...func()) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	// Cleartext HTTP/2 (prior knowledge) beside HTTP/1.1: a signup service
	// that keeps thousands of claims waiting can multiplex them over a few
	// connections, which costs the server far less memory per waiting
	// request than a connection each (docs/benchmarks.md).
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	for _, f := range onShutdown {
		srv.RegisterOnShutdown(f)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving HTTP: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 35*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("stopping HTTP server: %w", err)
	}
	return nil
}

// RunAPI serves the API node on ln until ctx ends. On shutdown it stops
// accepting first and keeps the decisions reader running while requests
// in flight finish, so they still get their decisions.
func RunAPI(ctx context.Context, a *API, ln net.Listener) error {
	readerCtx, stopReader := context.WithCancel(context.WithoutCancel(ctx))
	readerDone := make(chan error, 1)
	go func() { readerDone <- a.Run(readerCtx) }()
	serveErr := make(chan error, 1)
	go func() { serveErr <- Serve(ctx, ln, a.Handler, a.ui.Close) }()
	var err error
	select {
	case err = <-serveErr:
		stopReader()
		err = errors.Join(err, <-readerDone)
	case err = <-readerDone: // the reader failed: nothing can be answered
		stopReader()
		ln.Close()
		err = errors.Join(err, <-serveErr)
	}
	a.Close()
	return err
}
