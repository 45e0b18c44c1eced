// Package stacktest starts a whole registry for tests and examples: a real
// Kafka-protocol broker, a real PostgreSQL database, projectors and API
// nodes, all in process, from internal/testenv's dependencies.
package stacktest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/app/stack"
	"github.com/usernameregistry/registry/internal/auth"
	"github.com/usernameregistry/registry/internal/kafka"
	"github.com/usernameregistry/registry/internal/testenv"
	"github.com/usernameregistry/registry/projector"
)

// Options shape a Registry. Zero values give one projector, one API node
// and 12 partitions.
type Options struct {
	Partitions int32
	Projectors int // projectors started at once; more can be added with StartProjector
	APIs       int // API nodes started at once
	MaxWaiters int
	// HoldPeriod is the API nodes' hold period for releases and renames;
	// 0 means none.
	HoldPeriod time.Duration
	// AdminKeys signs (API nodes) and verifies (projectors) administrative
	// commands. Defaults to a key made for the registry.
	AdminKeys *events.AdminKeys
	// SessionTimeout for projectors; short, so tests that stop one see
	// its partitions move quickly. Defaults to 6s (kfake's minimum).
	SessionTimeout time.Duration
	// Tokens authenticates the API nodes' callers; nil runs them open.
	Tokens *auth.Store
	// MaxPageSubscribers bounds each node's live-page streams (0: default).
	MaxPageSubscribers int
	// PolicyVersion, when not 0, is the username policy version the new
	// database starts under (as registry dev --policy-version records it).
	PolicyVersion int
	Logger        *slog.Logger
}

// Registry is a running registry.
type Registry struct {
	t       testenv.T
	opts    Options
	Brokers []string
	Kafka   []kgo.Opt
	Pool    *pgxpool.Pool
	DBURL   string
	APIs    []*APINode
	// Metrics gathers every node's metrics, each labelled node="api-N" or
	// node="projector-N"; every API node serves it at /metrics.
	Metrics *prometheus.Registry

	mu         sync.Mutex // guards APIs and projectors: nodes may be started from any goroutine
	projectors int        // started so far, for labels
}

// APINode is a running API node.
type APINode struct {
	*stack.API
	URL    string // http://127.0.0.1:port, the public API
	OpsURL string // http://127.0.0.1:port, the operator pages (/ui, /metrics)
	stop   func()
}

// Stop shuts the node down and waits for it.
func (n *APINode) Stop() { n.stop() }

// Start starts a registry that t tears down.
func Start(t testenv.T, opts Options) *Registry {
	t.Helper()
	if opts.Partitions == 0 {
		opts.Partitions = 12
	}
	if opts.SessionTimeout == 0 {
		opts.SessionTimeout = 6 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = testenv.Logger(t)
	}
	if opts.AdminKeys == nil {
		secret := make([]byte, 32)
		rand.Read(secret) //nolint:errcheck // crypto/rand.Read does not fail
		keys, err := events.ParseAdminKeys(strings.NewReader("test " + hex.EncodeToString(secret)))
		if err != nil {
			t.Fatalf("admin key: %v", err)
		}
		opts.AdminKeys = keys
	}
	r := &Registry{t: t, opts: opts, Brokers: testenv.Kafka(t), Metrics: prometheus.NewRegistry()}
	r.Pool, r.DBURL = testenv.Database(t)
	r.Kafka = kafka.ClientOptions(r.Brokers, opts.Logger)
	r.ensureTopics()
	if opts.PolicyVersion != 0 {
		if err := projector.RequirePolicyVersion(context.Background(), r.Pool, opts.PolicyVersion); err != nil {
			t.Fatalf("recording the policy version: %v", err)
		}
	}
	for range opts.Projectors {
		r.StartProjector()
	}
	for range opts.APIs {
		r.StartAPI()
	}
	return r
}

func (r *Registry) ensureTopics() {
	cl, err := kgo.NewClient(r.Kafka...)
	if err != nil {
		r.t.Fatalf("kafka client: %v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := kafka.EnsureTopics(ctx, kadm.NewClient(cl), r.opts.Partitions, -1); err != nil {
		r.t.Fatalf("creating topics: %v", err)
	}
}

// Projector is a running projector.
type Projector struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error // what Run returned; set before done closes
}

// Stop stops the projector cleanly and returns what Run returned.
func (p *Projector) Stop() error {
	p.cancel()
	<-p.done
	return p.err
}

// Done is closed when Run has returned; use it to see a projector halt by
// itself, then Err says why.
func (p *Projector) Done() <-chan struct{} { return p.done }

// Err is what Run returned, once Done is closed.
func (p *Projector) Err() error { return p.err }

// StartProjector starts one more projector in the group.
func (r *Registry) StartProjector() *Projector {
	r.t.Helper()
	r.mu.Lock()
	r.projectors++
	reg := r.node(fmt.Sprintf("projector-%d", r.projectors))
	r.mu.Unlock()
	pr, err := projector.New(projector.Config{
		Kafka: r.Kafka, ClientOpts: func(role string) []kgo.Opt { return []kgo.Opt{kafka.Instrument(reg, role)} }, Partitions: r.opts.Partitions,
		SessionTimeout: r.opts.SessionTimeout, RetryBackoff: 20 * time.Millisecond, MaxRetryBackoff: 500 * time.Millisecond,
		Metrics: projector.NewMetrics(reg), AdminKeys: r.opts.AdminKeys, Logger: r.opts.Logger,
	}, r.Pool)
	if err != nil {
		r.t.Fatalf("projector: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Projector{cancel: cancel, done: make(chan struct{})}
	go func() {
		p.err = pr.Run(ctx)
		close(p.done)
	}()
	r.t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			r.t.Log("projector stopped with:", err)
		}
	})
	return p
}

// node is the registerer for one node: r.Metrics with a node label, so
// several nodes of one kind can share a registry.
func (r *Registry) node(name string) prometheus.Registerer {
	return prometheus.WrapRegistererWith(prometheus.Labels{"node": name}, r.Metrics)
}

// StartAPI starts one more API node and waits until it is positioned.
func (r *Registry) StartAPI() *APINode {
	r.t.Helper()
	r.mu.Lock()
	reg := r.node(fmt.Sprintf("api-%d", len(r.APIs)+1))
	r.APIs = append(r.APIs, nil) // reserve the label; filled in below
	slot := len(r.APIs) - 1
	r.mu.Unlock()
	a, err := stack.NewAPI(stack.APIConfig{
		Kafka: r.Kafka, Pool: r.Pool, MaxWaiters: r.opts.MaxWaiters, HoldPeriod: r.opts.HoldPeriod, AdminKeys: r.opts.AdminKeys, Logger: r.opts.Logger,
		Metrics: reg, Gatherer: r.Metrics, Tokens: r.opts.Tokens, MaxPageSubscribers: r.opts.MaxPageSubscribers,
	})
	if err != nil {
		r.t.Fatalf("api: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		r.t.Fatalf("listen: %v", err)
	}
	opsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		r.t.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- stack.RunAPI(ctx, a, stack.Listeners{API: ln, Ops: opsLn}) }()
	var once sync.Once
	n := &APINode{API: a, URL: "http://" + ln.Addr().String(), OpsURL: "http://" + opsLn.Addr().String(), stop: func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				r.t.Log("api stopped with:", err)
			}
		})
	}}
	r.t.Cleanup(n.Stop)
	select {
	case <-a.Reader.Positioned():
	case err := <-done:
		r.t.Fatalf("api failed to start: %v", err)
	case <-time.After(30 * time.Second):
		r.t.Fatalf("api reader not positioned after 30s")
	}
	r.mu.Lock()
	r.APIs[slot] = n
	r.mu.Unlock()
	return n
}

// AdminKeys is the key ring the registry's nodes sign and verify
// administrative commands with.
func (r *Registry) AdminKeys() *events.AdminKeys { return r.opts.AdminKeys }
