// Package stack wires the registry's API node: the claims producer, the
// decisions reader, the Go client and the HTTP API. `registry dev` and
// `registry serve` and the end-to-end tests all build it here, so they run
// the same wiring. (A projector node is just projector.New and Run.)
package stack

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
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
	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/app/ui"
	"github.com/usernameregistry/registry/internal/auth"
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
	// AdminKeys signs administrative commands (reserve, unreserve,
	// transfer) so the projectors obey them; nil sends them unsigned,
	// and they are decided invalid.
	AdminKeys *events.AdminKeys
	// PolicyVersion is the username policy version to claim and look up
	// under. Defaults to the version recorded in the database
	// (projector.PolicyVersion), which a new database records as the
	// latest.
	PolicyVersion int
	// Partitions is the claims topic's partition count, for lookups.
	// Defaults to the topic's, read from the broker.
	Partitions int32
	// Metrics is where the node registers its metrics; nil registers none.
	Metrics prometheus.Registerer
	// Gatherer, when set, is served at GET /metrics on the operator
	// handler (Ops). In one process it gathers every part's metrics
	// (registry dev serves the projector's here too).
	Gatherer prometheus.Gatherer
	// Tokens authenticates callers of the API; nil runs it open, every
	// request recorded as caller "anonymous" (dev, or serve
	// --insecure-no-auth). See package auth.
	Tokens *auth.Store
	// DBTimeout bounds every database call a request makes: a lookup by
	// name, and (twice it, since lookups by request_id are coalesced and
	// one may wait for the query before its own) the ledger check of a
	// retried request_id. Defaults to 10s, the bound each coalesced ledger
	// query has on its own.
	DBTimeout time.Duration
	// MaxPageSubscribers bounds the live page's open event streams.
	// Defaults to ui.Config's default.
	MaxPageSubscribers int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// API is a running API node's parts.
type API struct {
	// Handler is the public API: /v1/…, /healthz and /readyz, behind the
	// callers' bearer tokens.
	Handler http.Handler
	// Ops is the operator pages: /ui and GET /metrics. It shows usernames,
	// user ids and request ids and has no authentication of its own: serve
	// it on a loopback or otherwise private address (--ops-addr).
	Ops      http.Handler
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
	if err := deployment(&cfg, producer); err != nil {
		producer.Close()
		return nil, err
	}
	a, err := assemble(cfg, producer)
	if err != nil {
		producer.Close()
		return nil, err
	}
	return a, nil
}

// deployment fills in the partition count lookups report, from the
// broker (bounded: NewAPI takes no context). A broker that does not answer
// in time leaves it out of lookups rather than stop the node. The policy
// version is read from the database when first needed (ClientConfig's
// PolicyVersion), so a database that is down at start gives 503s, not a
// node that cannot start.
func deployment(cfg *APIConfig, producer *kgo.Client) error {
	if cfg.Partitions != 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	topics, err := kadm.NewClient(producer).ListTopics(ctx, events.TopicClaims)
	if t, ok := topics[events.TopicClaims]; err == nil && ok && t.Err == nil {
		cfg.Partitions = int32(len(t.Partitions))
	} else if cfg.Logger != nil {
		cfg.Logger.Warn("lookups will not report partitions: the claims topic's partition count is unknown", "error", err)
	}
	return nil
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
	live, err := ui.New(ui.Config{Stats: a.stats, MaxSubscribers: cfg.MaxPageSubscribers, Logger: cfg.Logger})
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
	dir := &deadlineDirectory{store: store, timeout: cmp.Or(cfg.DBTimeout, 10*time.Second)}
	var policy *username.Policy
	if cfg.PolicyVersion != 0 {
		if policy, err = username.ForVersion(cfg.PolicyVersion); err != nil {
			return nil, err
		}
	}
	client, err := claims.NewClient(claims.ClientConfig{Producer: producer, Decisions: reader, Topics: cfg.Topics, Ledger: dir, Policy: policy,
		PolicyVersion: dir.policyVersion, CarriedInvalid: dir.carriedInvalid, HoldPeriod: cfg.HoldPeriod, AdminKeys: cfg.AdminKeys, Metrics: metrics, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	ready := func(ctx context.Context) error {
		if err := reader.Ready(ctx); err != nil {
			return &claims.ReadyError{Detail: "the registrations topic is not being read yet", Err: err}
		}
		if err := store.Ping(ctx); err != nil {
			return &claims.ReadyError{Detail: "the registry's database does not answer", Err: err}
		}
		return nil
	}
	h, err := claims.NewHandler(claims.HandlerConfig{Client: client, Directory: dir, Ready: ready, Partitions: cfg.Partitions, Upgrading: dir.upgradingTo,
		Metrics: metrics, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	a.Handler = auth.Middleware(auth.Config{Store: cfg.Tokens, MaxWaiters: cmp.Or(cfg.MaxWaiters, 10000), Logger: cfg.Logger}, h)
	ops := http.NewServeMux()
	if cfg.Gatherer != nil {
		ops.Handle("GET /metrics", metrics.InstrumentHTTP("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{})))
	}
	page := metrics.InstrumentHTTP("/ui", live.Handler())
	ops.Handle("/ui", page)
	ops.Handle("/ui/", page)
	a.Ops, a.Client = ops, client
	return a, nil
}

// deadlineDirectory bounds every database call a request makes, so a
// database that stops answering turns into a 503 within the timeout
// instead of holding the request (and its connection) indefinitely.
type deadlineDirectory struct {
	store   *projector.Store
	timeout time.Duration
}

// Decision gets twice the timeout: ledger lookups are coalesced, so one
// may wait for the query in flight before its own query runs, and each
// query is bounded by the timeout on its own.
func (d *deadlineDirectory) Decision(ctx context.Context, requestID string) (*events.Decision, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*d.timeout)
	defer cancel()
	return d.store.Decision(ctx, requestID)
}

// policyVersion reads (recording on a new database) the username policy
// version the deployment decides under.
func (d *deadlineDirectory) policyVersion(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	return d.store.PolicyVersion(ctx)
}

func (d *deadlineDirectory) carriedInvalid(ctx context.Context, key, canonical string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	return d.store.CarriedInvalid(ctx, key, canonical)
}

func (d *deadlineDirectory) upgradingTo(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	return d.store.UpgradingTo(ctx)
}

func (d *deadlineDirectory) HolderOfKey(ctx context.Context, key string) (*claims.Registration, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	return d.store.HolderOfKey(ctx, key)
}

func (d *deadlineDirectory) NameState(ctx context.Context, key string) (claims.NameState, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	return d.store.NameState(ctx, key)
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

// Limits bound what one connection or request can hold on a listener.
// The zero value of a field takes DefaultLimits'.
type Limits struct {
	// ReadHeaderTimeout: an HTTP/1.1 request's header must arrive within it.
	ReadHeaderTimeout time.Duration
	// BodyTimeout: a request's body must arrive within it, on HTTP/1.1 and
	// HTTP/2 alike; past it the read fails, the request is answered 400
	// and an HTTP/1.1 connection is closed. It ends when the body has been
	// read, so it never cuts a claim that waits for its decision.
	BodyTimeout time.Duration
	// IdleTimeout closes a keep-alive connection (HTTP/1.1) or an HTTP/2
	// connection with no open stream after this long.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's header block (HTTP/1.1) or header
	// list (HTTP/2); larger ones get 431 or a stream error.
	MaxHeaderBytes int
	// MaxConcurrentStreams bounds the open streams of one HTTP/2
	// connection.
	MaxConcurrentStreams int
	// MaxReadFrameSize is the largest HTTP/2 frame read.
	MaxReadFrameSize int
}

// DefaultLimits are what the registry's listeners use. 250 streams per
// connection keep the 10,000-waiter h2c benchmark's 64 connections within
// bounds (about 157 streams each); 16 KiB of header is 30 times what a
// claim with its bearer token sends.
var DefaultLimits = Limits{
	ReadHeaderTimeout:    10 * time.Second,
	BodyTimeout:          10 * time.Second,
	IdleTimeout:          60 * time.Second,
	MaxHeaderBytes:       16 << 10,
	MaxConcurrentStreams: 250,
	MaxReadFrameSize:     16 << 10,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	return Limits{
		ReadHeaderTimeout:    cmp.Or(l.ReadHeaderTimeout, d.ReadHeaderTimeout),
		BodyTimeout:          cmp.Or(l.BodyTimeout, d.BodyTimeout),
		IdleTimeout:          cmp.Or(l.IdleTimeout, d.IdleTimeout),
		MaxHeaderBytes:       cmp.Or(l.MaxHeaderBytes, d.MaxHeaderBytes),
		MaxConcurrentStreams: cmp.Or(l.MaxConcurrentStreams, d.MaxConcurrentStreams),
		MaxReadFrameSize:     cmp.Or(l.MaxReadFrameSize, d.MaxReadFrameSize),
	}
}

// ServeConfig shapes one listener's server.
type ServeConfig struct {
	// Limits default to DefaultLimits.
	Limits Limits
	// TLSCertFile and TLSKeyFile, both set, serve HTTPS (HTTP/1.1 and
	// HTTP/2 by ALPN) instead of HTTP/1.1 and h2c. PEM files.
	TLSCertFile, TLSKeyFile string
	// OnShutdown runs as shutdown begins: it ends streams that would
	// otherwise hold the shutdown for the whole grace period.
	OnShutdown []func()
}

// NewServer is the http.Server for h with the limits of cfg.
func NewServer(h http.Handler, cfg ServeConfig) *http.Server {
	l := cfg.Limits.withDefaults()
	srv := &http.Server{
		Handler:           bodyDeadline(h, l.BodyTimeout),
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: l.MaxConcurrentStreams,
			MaxReadFrameSize:     l.MaxReadFrameSize,
			// A peer that stops answering is found by a ping, not held.
			SendPingTimeout: l.IdleTimeout,
			PingTimeout:     15 * time.Second,
		},
	}
	// Cleartext HTTP/2 (prior knowledge) beside HTTP/1.1: a signup service
	// that keeps thousands of claims waiting can multiplex them over a few
	// connections, which costs the server far less memory per waiting
	// request than a connection each (docs/benchmarks.md). With TLS,
	// HTTP/2 is negotiated by ALPN instead.
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	if cfg.TLSCertFile != "" {
		srv.Protocols.SetHTTP2(true)
	} else {
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	for _, f := range cfg.OnShutdown {
		srv.RegisterOnShutdown(f)
	}
	return srv
}

// bodyDeadline gives a request timeout to read its body: a body that does
// not arrive in time fails the read (and on HTTP/1.1 the connection is
// closed after the answer). The deadline is lifted once the body is read,
// so a request that then waits for a decision keeps its connection.
func bodyDeadline(h http.Handler, timeout time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			h.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(timeout)); err == nil {
			r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
		}
		h.ServeHTTP(w, r)
	})
}

// deadlineBody lifts the read deadline when the body ends, before the
// server's background read (which watches for the client going away)
// could trip over it and cancel a request still waiting for its decision.
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.done {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// Serve serves h on ln with DefaultLimits until ctx ends, then stops
// accepting and lets requests in flight finish (up to 35s, longer than
// the longest wait).
func Serve(ctx context.Context, ln net.Listener, h http.Handler, onShutdown ...func()) error {
	return ServeWith(ctx, ln, h, ServeConfig{OnShutdown: onShutdown})
}

// ServeWith is Serve with a ServeConfig.
func ServeWith(ctx context.Context, ln net.Listener, h http.Handler, cfg ServeConfig) error {
	srv := NewServer(h, cfg)
	errc := make(chan error, 1)
	go func() {
		if cfg.TLSCertFile != "" {
			errc <- srv.ServeTLS(ln, cfg.TLSCertFile, cfg.TLSKeyFile)
			return
		}
		errc <- srv.Serve(ln)
	}()
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

// Listeners are where an API node serves.
type Listeners struct {
	// API serves the public API (API.Handler). Required.
	API net.Listener
	// APIConfig shapes the API's server: TLS and limits.
	APIConfig ServeConfig
	// Ops, when set, serves the operator pages (API.Ops) with
	// DefaultLimits and without TLS; keep it on a private address.
	Ops net.Listener
}

// RunAPI serves the API node until ctx ends. On shutdown it stops
// accepting first and keeps the decisions reader running while requests
// in flight finish, so they still get their decisions.
func RunAPI(ctx context.Context, a *API, ls Listeners) error {
	readerCtx, stopReader := context.WithCancel(context.WithoutCancel(ctx))
	readerDone := make(chan error, 1)
	go func() { readerDone <- a.Run(readerCtx) }()
	serveErr := make(chan error, 1)
	go func() { serveErr <- a.serve(ctx, ls) }()
	var err error
	select {
	case err = <-serveErr:
		stopReader()
		err = errors.Join(err, <-readerDone)
	case err = <-readerDone: // the reader failed: nothing can be answered
		stopReader()
		ls.API.Close()
		if ls.Ops != nil {
			ls.Ops.Close()
		}
		err = errors.Join(err, <-serveErr)
	}
	a.Close()
	return err
}

// serve runs the API's listener and, when given, the operators'; either
// failing stops both.
func (a *API) serve(ctx context.Context, ls Listeners) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 2)
	n := 1
	go func() {
		errs <- ServeWith(ctx, ls.API, a.Handler, ls.APIConfig)
		cancel()
	}()
	if ls.Ops != nil {
		n++
		go func() {
			errs <- ServeWith(ctx, ls.Ops, a.Ops, ServeConfig{OnShutdown: []func(){a.ui.Close}})
			cancel()
		}()
	} else {
		a.ui.Close() // no page can connect: nothing to end
	}
	var err error
	for range n {
		err = errors.Join(err, <-errs)
	}
	return err
}
