package chaos

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/kafka"
	"github.com/usernameregistry/registry/internal/kafkalaunch"
	"github.com/usernameregistry/registry/internal/pg"
	"github.com/usernameregistry/registry/internal/pglaunch"
	"github.com/usernameregistry/registry/projector/migrations"
)

// Config configures a chaos run.
type Config struct {
	// Seed drives the workload and the injector. Required.
	Seed uint64
	// Duration is how long load and faults run. Defaults to 60s.
	Duration time.Duration
	// Clients is the number of concurrent clients. Defaults to 8.
	Clients int
	// Projectors and APIs are the process counts. Default to 3 and 2.
	Projectors, APIs int
	// Partitions of the topics. Defaults to 6.
	Partitions int
	// Dir holds the run's data and process logs. Required.
	Dir string
	// Registry is the registry binary; Self is this program, run as
	// "Self broker" for the broker process. Required.
	Registry, Self string
	// Faults are the fault types to inject; empty means every one.
	Faults []string
	// Kafka is the broker: KafkaEmbedded (the default) runs the registry's
	// kfake as a process behind a proxy; KafkaApache runs a three-node
	// Apache Kafka cluster (internal/kafkalaunch) with its broker faults.
	Kafka string
	// SessionTimeout for the projector group. Defaults to 5s on kfake and
	// to 6s, the smallest Kafka accepts by default, on Apache Kafka.
	SessionTimeout time.Duration
	// Settle bounds the final wait for every claim to be decided.
	// Defaults to 30s.
	Settle time.Duration
	// Env is added to the registry processes' environment (the chaosbug
	// build reads REGISTRY_CHAOS_BUG from it).
	Env []string
	// Upgrade starts the registry under username policy version 1 and
	// runs "registry policy upgrade --to 2" in the middle of the load,
	// while faults keep being injected (upgrade.go).
	Upgrade bool
	// Log receives progress lines.
	Log io.Writer
}

func (c *Config) defaults() error {
	if c.Dir == "" || c.Registry == "" || c.Self == "" {
		return errors.New("chaos: Dir, Registry and Self are required")
	}
	c.Duration = cmp.Or(c.Duration, 60*time.Second)
	c.Clients = cmp.Or(c.Clients, 8)
	c.Projectors = cmp.Or(c.Projectors, 3)
	c.APIs = cmp.Or(c.APIs, 2)
	c.Partitions = cmp.Or(c.Partitions, 6)
	c.Kafka = cmp.Or(c.Kafka, KafkaEmbedded)
	types := FaultTypes
	switch c.Kafka {
	case KafkaEmbedded:
		c.SessionTimeout = cmp.Or(c.SessionTimeout, 5*time.Second)
	case KafkaApache:
		c.SessionTimeout = cmp.Or(c.SessionTimeout, 6*time.Second)
		types = ApacheFaultTypes
	default:
		return fmt.Errorf("chaos: unknown Kafka %q (want %s or %s)", c.Kafka, KafkaEmbedded, KafkaApache)
	}
	c.Settle = cmp.Or(c.Settle, 30*time.Second)
	if len(c.Faults) == 0 {
		c.Faults = types
	}
	for _, f := range c.Faults {
		if !slices.Contains(types, f) {
			return fmt.Errorf("chaos: fault type %q is not one of %s's: %v", f, c.Kafka, types)
		}
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	return nil
}

// Outcome is a run's result.
type Outcome struct {
	Report *Report
	Faults map[string]int // injected, by type
	// NotInjected lists the configured fault types the run was too short
	// to inject even once.
	NotInjected []string
	// SettledIn is how long after healing every claim was decided; -1
	// when the settle time ran out.
	SettledIn time.Duration
	Dir       string
	// Upgrade is what the policy upgrade did (Config.Upgrade), or nil.
	Upgrade *UpgradeRun
}

// run is one chaos run's parts.
type run struct {
	cfg        Config
	log        io.Writer
	pg         *database
	proxy      *Proxy               // kfake only
	broker     *proc                // kfake only
	cluster    *kafkalaunch.Cluster // Apache Kafka only
	projectors []*proc
	apis       []*proc
	apiURLs    []string
	token      string // the workload's bearer token; the API nodes hold its hash
	seeds      []string
	work       *workload
	hist       History
	faults     faultCounter
	env        []string // the registry processes' environment
	adminKey   string   // the admin key file
	upgrade    *UpgradeRun
}

// Run performs a chaos run: start, load with faults, heal, settle,
// collect, check.
func Run(ctx context.Context, cfg Config) (*Outcome, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	r := &run{cfg: cfg, log: cfg.Log, work: newWorkload(cfg.Seed, cfg.Upgrade), faults: faultCounter{n: map[string]int{}}}
	procCtx, stopProcs := context.WithCancel(context.WithoutCancel(ctx))
	defer stopProcs()
	defer r.shutdown()
	if err := r.start(procCtx); err != nil {
		return nil, err
	}
	r.logf("load and faults for %s: %d clients, %d projectors, %d APIs, %d partitions, faults %v", cfg.Duration, cfg.Clients, cfg.Projectors, cfg.APIs, cfg.Partitions, cfg.Faults)
	loadCtx, stopLoad := context.WithTimeout(ctx, cfg.Duration)
	var wg sync.WaitGroup
	for i := range cfg.Clients {
		wg.Go(func() { r.client(loadCtx, i) })
	}
	wg.Go(func() { r.inject(loadCtx) })
	if cfg.Upgrade {
		r.upgrade = &UpgradeRun{}
		wg.Go(func() { r.runUpgrade(loadCtx) })
	}
	wg.Wait()
	stopLoad()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	r.logf("healing everything")
	r.heal(ctx)
	if cfg.Upgrade {
		r.finishUpgrade(ctx)
	}
	settled := r.settle(ctx)
	r.logf("collecting")
	in, err := r.collect(ctx)
	if err != nil {
		return nil, err
	}
	in.Ops = r.hist.Ops()
	if cfg.Upgrade {
		in.PolicyVersion = 1
		upgradeWaits(r.upgrade, in)
	}
	if err := writeHistory(filepath.Join(cfg.Dir, "history.jsonl"), in.Ops); err != nil {
		return nil, err
	}
	out := &Outcome{Report: Check(in), Faults: r.faults.snapshot(), SettledIn: settled, Dir: cfg.Dir, Upgrade: r.upgrade}
	for _, f := range cfg.Faults {
		if out.Faults[f] == 0 {
			out.NotInjected = append(out.NotInjected, f)
		}
	}
	if slices.Contains(cfg.Faults, FaultPauseProjector) && out.Faults[FaultPauseProjector] > 0 && out.Faults[PausedInRound] == 0 {
		out.NotInjected = append(out.NotInjected, PausedInRound)
	}
	return out, nil
}

func (r *run) logf(format string, args ...any) {
	fmt.Fprintf(r.log, "%s chaos: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

func (r *run) start(ctx context.Context) error {
	if err := os.MkdirAll(r.cfg.Dir, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(r.cfg.Dir, 0o755); err != nil { // PostgreSQL runs as postgres when we are root
		return err
	}
	procLog, err := os.Create(filepath.Join(r.cfg.Dir, "processes.log"))
	if err != nil {
		return err
	}
	ports, err := freePorts(3 + r.cfg.APIs)
	if err != nil {
		return err
	}
	if r.pg, err = startDatabase(ctx, filepath.Join(r.cfg.Dir, "pg"), ports[0], procLog); err != nil {
		return err
	}
	if err := WatchProgress(ctx, r.pg.url); err != nil {
		return err
	}
	if err := r.startKafka(ctx, ports[1], ports[2], procLog); err != nil {
		return err
	}
	if err := r.createTopics(ctx); err != nil {
		return err
	}
	env := append([]string{"REGISTRY_KAFKA_BROKERS=" + strings.Join(r.seeds, ","), "DATABASE_URL=" + r.pg.url, "REGISTRY_PARTITIONS=" + strconv.Itoa(r.cfg.Partitions), "REGISTRY_DB_MAX_CONNS=8"}, r.cfg.Env...)
	if r.cfg.Upgrade {
		env = append(env, "REGISTRY_POLICY_VERSION=1")
	}
	r.env = env
	onExit := func(name string, err error) {
		if err != nil {
			r.logf("%s exited: %v", name, err)
		}
		var ee interface{ ExitCode() int }
		if errors.As(err, &ee) && ee.ExitCode() == 137 {
			r.faults.add("failpoint-crash")
		}
	}
	adminKey, err := r.writeAdminKey()
	if err != nil {
		return err
	}
	r.adminKey = adminKey
	for i := range r.cfg.Projectors {
		p := newProc(fmt.Sprintf("projector-%d", i+1), r.cfg.Registry, []string{"project", "--metrics", "", "--session-timeout", r.cfg.SessionTimeout.String(), "--admin-key-file", adminKey}, env, procLog)
		p.onExit = onExit
		r.projectors = append(r.projectors, p)
		go p.supervise(ctx)
	}
	tokens, err := r.writeTokens()
	if err != nil {
		return err
	}
	for i := range r.cfg.APIs {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[3+i]))
		a := newProc(fmt.Sprintf("api-%d", i+1), r.cfg.Registry, []string{"serve", "--http", addr, "--tokens", tokens, "--ops-addr", "", "--hold", lifecycleHold.String(), "--admin-key-file", adminKey}, env, procLog)
		a.onExit = onExit
		r.apis, r.apiURLs = append(r.apis, a), append(r.apiURLs, "http://"+addr)
		go a.supervise(ctx)
	}
	return r.awaitReady(ctx)
}

// startKafka starts the broker: on kfake a broker process on brokerPort
// behind a proxy on proxyPort; on Apache Kafka a three-node cluster that
// clients reach directly (the proxy fronts one broker only).
func (r *run) startKafka(ctx context.Context, brokerPort, proxyPort int, procLog io.Writer) error {
	if r.cfg.Kafka == KafkaApache {
		var err error
		r.cluster, err = kafkalaunch.Start(ctx, kafkalaunch.Config{
			Dir: filepath.Join(r.cfg.Dir, "kafka"), Nodes: 3, HeapMB: 512, QuickStart: true,
			Logger: slog.New(slog.NewTextHandler(procLog, nil)),
		})
		if err != nil {
			return err
		}
		r.seeds = r.cluster.Addrs()
		r.logf("Apache Kafka %s: three nodes at %s", kafkalaunch.Version, strings.Join(r.seeds, ","))
		return nil
	}
	brokerAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(brokerPort))
	proxyAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(proxyPort))
	var err error
	if r.proxy, err = NewProxy(proxyAddr, brokerAddr, r.fromProjector); err != nil {
		return err
	}
	r.seeds = []string{proxyAddr}
	r.broker = newProc("broker", r.cfg.Self, []string{"broker", "--dir", filepath.Join(r.cfg.Dir, "kafka"), "--port", strconv.Itoa(brokerPort), "--advertise", proxyAddr}, nil, procLog)
	go r.broker.supervise(ctx)
	return nil
}

// fromProjector reports whether the peer at port is a projector process,
// for the proxy's faults.
func (r *run) fromProjector(port int) bool {
	var pids []int
	for _, p := range r.projectors {
		if pid := p.pid(); pid != 0 {
			pids = append(pids, pid)
		}
	}
	return pidOwningPort(port, pids) != 0
}

func (r *run) createTopics(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(r.seeds...))
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		_, err := kafka.EnsureTopics(ctx, kadm.NewClient(cl), int32(r.cfg.Partitions), -1)
		if err == nil {
			return nil
		}
		if !sleep(ctx, 200*time.Millisecond) {
			return fmt.Errorf("creating topics on the broker: %w", err)
		}
	}
}

func (r *run) awaitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for _, u := range r.apiURLs {
		for {
			resp, err := http.Get(u + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if !sleep(ctx, 200*time.Millisecond) {
				return fmt.Errorf("API %s not ready after 90s; see %s", u, filepath.Join(r.cfg.Dir, "processes.log"))
			}
		}
	}
	return nil
}

// client sends operations until ctx ends.
func (r *run) client(ctx context.Context, id int) {
	httpc := &http.Client{Timeout: 20 * time.Second}
	prod, err := kgo.NewClient(kgo.SeedBrokers(r.seeds...), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.RecordDeliveryTimeout(10*time.Second))
	if err != nil {
		r.logf("client %d: %v", id, err)
		return
	}
	defer prod.Close()
	for n := 0; ctx.Err() == nil; n++ {
		op := r.work.next()
		op.Client = id
		if op.Kind == KindPoison {
			n := r.work.intn(1 << 20)
			rec := poison(n, r.cfg.Partitions, r.work)
			op.Invoke = time.Now()
			pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			err := prod.ProduceSync(pctx, rec).FirstErr()
			if err != nil {
				op.Error = err.Error()
			}
			cancel()
			if c, derr := events.DecodeClaim(rec); derr == nil && err == nil && n%6 == wrongPartition {
				r.work.retryable(Op{Kind: KindNew, RequestID: c.RequestID, UserID: c.UserID, Username: c.Username, API: op.API})
			}
			op.Complete, op.Result = time.Now(), ResultUnknown
			r.hist.Add(op)
			continue
		}
		op.API %= len(r.apiURLs)
		wait := time.Duration(500+r.work.intn(2500)) * time.Millisecond
		if op.Kind == KindLifecycle {
			sendLifecycle(context.WithoutCancel(ctx), httpc, r.apiURLs[op.API], r.token, &op, wait)
			r.hist.Add(op)
			continue
		}
		// The request outlives the load phase: cutting it would only
		// turn answers into unknowns.
		send(context.WithoutCancel(ctx), httpc, r.apiURLs[op.API], r.token, &op, wait)
		r.hist.Add(op)
		for upgrading(op) && sleep(ctx, time.Second) {
			// 503 policy_upgrading with Retry-After: the same request
			// again, as a client must.
			op = Op{Kind: KindRetry, Client: id, API: op.API, RequestID: op.RequestID, UserID: op.UserID, Username: op.Username}
			send(context.WithoutCancel(ctx), httpc, r.apiURLs[op.API], r.token, &op, wait)
			r.hist.Add(op)
		}
		if op.Result == ResultUnknown && op.Code != http.StatusAccepted {
			// A real client backs off after an error instead of
			// hammering a node that is down.
			sleep(ctx, time.Duration(100+r.work.intn(400))*time.Millisecond)
		}
	}
}

// heal ends every fault: every process up and running, the proxy clean,
// the database started.
func (r *run) heal(ctx context.Context) {
	procs := append(append([]*proc{}, r.projectors...), r.apis...)
	if r.proxy != nil {
		r.proxy.Heal()
		procs = append(procs, r.broker)
	}
	if r.cluster != nil {
		for _, n := range r.cluster.Nodes() {
			n.Resume()
			if err := n.Start(ctx); err != nil {
				r.logf("healing: starting Kafka node %d: %v", n.ID(), err)
			}
		}
	}
	r.pg.ensureUp(ctx, r)
	for _, p := range procs {
		p.signal(sigcont)
		p.up()
	}
}

// settle waits until every claim in the log is decided and published, or
// Settle passes; it returns how long that took, or -1.
func (r *run) settle(ctx context.Context) time.Duration {
	start := time.Now()
	deadline := start.Add(r.cfg.Settle)
	for time.Now().Before(deadline) {
		if ok, _ := r.settled(ctx); ok {
			d := time.Since(start)
			r.logf("every claim decided %s after healing", d.Round(time.Millisecond))
			return d
		}
		sleep(ctx, 250*time.Millisecond)
	}
	_, why := r.settled(ctx)
	r.logf("not settled after %s: %s", r.cfg.Settle, why)
	return -1
}

func (r *run) settled(ctx context.Context) (bool, string) {
	return Settled(ctx, r.seeds, r.pg.url)
}

func listEnds(ctx context.Context, seeds []string, topic string) (map[int32]int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	listed, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	var lerr error
	listed.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			lerr = o.Err
		}
		out[o.Partition] = o.Offset
	})
	return out, lerr
}

// collect reads the topics and tables for the checker.
func (r *run) collect(ctx context.Context) (*Input, error) {
	return Collect(ctx, r.seeds, r.pg.url, r.cfg.Partitions)
}

// Collect reads what Check needs, but the history: the claims and
// registrations topics from the beginning, the claims log ends, and the
// ledger, projection, progress and outbox from the database at dbURL.
func Collect(ctx context.Context, seeds []string, dbURL string, partitions int) (*Input, error) {
	in := &Input{Partitions: partitions}
	var err error
	if in.Ends, err = listEnds(ctx, seeds, events.TopicClaims); err != nil {
		return nil, fmt.Errorf("listing claims log ends: %w", err)
	}
	if in.Claims, err = readTopic(ctx, seeds, events.TopicClaims); err != nil {
		return nil, err
	}
	if in.Registrations, err = readTopic(ctx, seeds, events.TopicRegistrations); err != nil {
		return nil, err
	}
	d := &database{url: dbURL}
	if err := d.collect(ctx, in); err != nil {
		return nil, err
	}
	return in, nil
}

// WatchProgress migrates the database at dbURL and installs a trigger on
// claim_partitions that records every update a correct projector cannot
// make: an advance that does not move next_offset forward (the
// compare-and-set only ever moves it from the stored value to a larger
// one) or an epoch that goes back. Collect reads them into
// Input.StaleWrites. The trigger is instrumentation of the chaos
// database, not part of the registry's schema.
func WatchProgress(ctx context.Context, dbURL string) error {
	pool, err := pg.Connect(ctx, dbURL, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := migrations.Migrate(ctx, pool, slog.New(slog.DiscardHandler)); err != nil {
		return err
	}
	_, err = pool.Exec(ctx, sqlWatchProgress)
	return err
}

const sqlWatchProgress = `
CREATE TABLE IF NOT EXISTS chaos_stale_writes (
    partition int, old_next bigint, new_next bigint, old_epoch bigint, new_epoch bigint, at timestamptz DEFAULT clock_timestamp()
);
CREATE OR REPLACE FUNCTION chaos_watch_progress() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.next_offset = OLD.next_offset AND NEW.owner_epoch = OLD.owner_epoch
       AND NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        RETURN NEW; -- not an advance: the partition's policy state saved (policy_version, frozen_to, staged)
    END IF;
    IF NEW.owner_epoch < OLD.owner_epoch
       OR NEW.next_offset < OLD.next_offset
       OR (NEW.owner_epoch = OLD.owner_epoch AND NEW.next_offset <= OLD.next_offset) THEN
        INSERT INTO chaos_stale_writes (partition, old_next, new_next, old_epoch, new_epoch)
        VALUES (OLD.partition, OLD.next_offset, NEW.next_offset, OLD.owner_epoch, NEW.owner_epoch);
    END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS chaos_watch_progress ON claim_partitions;
CREATE TRIGGER chaos_watch_progress BEFORE UPDATE ON claim_partitions
    FOR EACH ROW EXECUTE FUNCTION chaos_watch_progress();`

// Settled reports whether every claim in the log is decided and published:
// each partition's stored next offset is its log end and the outbox is
// empty. When not, the string says what is missing.
//
// The database is read before the log's ends are listed. The other way
// round, an outbox published in between (a rename's next step written to
// claims, its row deleted) would look settled: ends listed without the new
// record, then an empty outbox and stored offsets equal to those ends.
// This order can only miss a moment of being settled, never report one
// falsely: a record the outbox writes after the database is read comes
// from a decision of a record below the listed end, which the stored
// offsets then did not yet cover.
func Settled(ctx context.Context, seeds []string, dbURL string) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	stored, outbox, err := (&database{url: dbURL}).progress(ctx)
	if err != nil {
		return false, err.Error()
	}
	ends, err := listEnds(ctx, seeds, events.TopicClaims)
	if err != nil {
		return false, err.Error()
	}
	if outbox > 0 {
		return false, fmt.Sprintf("%d decisions unpublished", outbox)
	}
	for p, end := range ends {
		if stored[p] != end {
			return false, fmt.Sprintf("partition %d decided up to %d of %d", p, stored[p], end)
		}
	}
	return true, ""
}

// readTopic reads topic from the beginning to its end offsets as listed
// now, within a minute.
func readTopic(ctx context.Context, seeds []string, topic string) ([]*kgo.Record, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	return kafka.ReadToEnd(ctx, topic, kgo.SeedBrokers(seeds...))
}

// shutdown stops every process and the database.
func (r *run) shutdown() {
	var wg sync.WaitGroup
	for _, p := range append(append([]*proc{}, r.apis...), r.projectors...) {
		wg.Go(func() { p.stop(10 * time.Second) })
	}
	wg.Wait()
	if r.broker != nil {
		r.broker.stop(10 * time.Second)
	}
	if r.proxy != nil {
		r.proxy.Close()
	}
	if r.cluster != nil {
		r.cluster.Stop()
	}
	if r.pg != nil {
		r.pg.stop()
	}
}

// writeHistory writes ops as JSON lines, for a person reading a failed
// run.
func writeHistory(path string, ops []Op) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	for _, op := range ops {
		if err := enc.Encode(op); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

func freePorts(n int) ([]int, error) {
	var out []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// database is the run's PostgreSQL cluster, which faults stop and start.
type database struct {
	dir  string
	port int
	url  string
	log  *slog.Logger

	mu      sync.Mutex
	cluster *pglaunch.Cluster // nil while down
}

func startDatabase(ctx context.Context, dir string, port int, w io.Writer) (*database, error) {
	d := &database{dir: dir, port: port, log: slog.New(slog.NewTextHandler(w, nil))}
	if err := d.start(ctx); err != nil {
		return nil, err
	}
	d.url = d.cluster.URL("postgres")
	return d, nil
}

func (d *database) start(ctx context.Context) error {
	c, err := pglaunch.Start(ctx, pglaunch.Config{Dir: d.dir, Port: d.port, Durable: true, Logger: d.log})
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.cluster = c
	d.mu.Unlock()
	return nil
}

// crash stops the server immediately; start brings it back.
func (d *database) crash() {
	d.mu.Lock()
	c := d.cluster
	d.cluster = nil
	d.mu.Unlock()
	if c != nil {
		c.StopImmediate() //nolint:errcheck // an immediate stop reports the crash we asked for
	}
}

func (d *database) ensureUp(ctx context.Context, r *run) {
	d.mu.Lock()
	up := d.cluster != nil
	d.mu.Unlock()
	for !up && ctx.Err() == nil {
		if err := d.start(ctx); err != nil {
			r.logf("restarting PostgreSQL: %v", err)
			sleep(ctx, time.Second)
			continue
		}
		up = true
	}
}

func (d *database) stop() {
	d.mu.Lock()
	c := d.cluster
	d.cluster = nil
	d.mu.Unlock()
	if c != nil {
		c.Stop() //nolint:errcheck // best effort at the end of a run
	}
}

func (d *database) conn(ctx context.Context) (*pgx.Conn, error) {
	return pgx.Connect(ctx, d.url)
}

// progress reads each partition's stored next offset and the outbox size.
func (d *database) progress(ctx context.Context) (map[int32]int64, int, error) {
	conn, err := d.conn(ctx)
	if err != nil {
		return nil, 0, err
	}
	defer conn.Close(ctx)
	stored := map[int32]int64{}
	var p int32
	var next int64
	rows, _ := conn.Query(ctx, `SELECT partition, next_offset FROM claim_partitions`)
	if _, err := pgx.ForEachRow(rows, []any{&p, &next}, func() error { stored[p] = next; return nil }); err != nil {
		return nil, 0, err
	}
	var outbox int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&outbox)
	return stored, outbox, err
}

// collect reads the ledger, the projection and the progress into in.
func (d *database) collect(ctx context.Context, in *Input) error {
	var err error
	if in.Stored, in.Outbox, err = d.progress(ctx); err != nil {
		return fmt.Errorf("reading progress: %w", err)
	}
	conn, err := d.conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var l LedgerRow
	rows, _ := conn.Query(ctx, `SELECT request_id::text, claim_partition, claim_offset, user_id, username, decision FROM requests`)
	if _, err := pgx.ForEachRow(rows, []any{&l.RequestID, &l.Partition, &l.Offset, &l.UserID, &l.Username, &l.Decision}, func() error {
		in.Ledger = append(in.Ledger, l)
		return nil
	}); err != nil {
		return fmt.Errorf("reading the ledger: %w", err)
	}
	var w struct {
		part               int32
		oldNext, newNext   int64
		oldEpoch, newEpoch int64
		at                 time.Time
	}
	rows, _ = conn.Query(ctx, `SELECT partition, old_next, new_next, old_epoch, new_epoch, at FROM chaos_stale_writes ORDER BY at`)
	if _, err := pgx.ForEachRow(rows, []any{&w.part, &w.oldNext, &w.newNext, &w.oldEpoch, &w.newEpoch, &w.at}, func() error {
		in.StaleWrites = append(in.StaleWrites, fmt.Sprintf("%s claim_partitions %d: next_offset %d → %d, owner_epoch %d → %d",
			w.at.UTC().Format("15:04:05.000"), w.part, w.oldNext, w.newNext, w.oldEpoch, w.newEpoch))
		return nil
	}); err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42P01" { // no watch installed (tests): nothing to read
			return fmt.Errorf("reading stale writes: %w", err)
		}
	}
	var h Holding
	rows, _ = conn.Query(ctx, `SELECT canonical, key, user_id::text, request_id::text, claim_partition, claim_offset FROM usernames`)
	if _, err := pgx.ForEachRow(rows, []any{&h.Canonical, &h.Key, &h.UserID, &h.RequestID, &h.At.Partition, &h.At.Offset}, func() error {
		in.Usernames = append(in.Usernames, h)
		return nil
	}); err != nil {
		return fmt.Errorf("reading usernames: %w", err)
	}
	return nil
}

// writeAdminKey writes the key the API nodes sign administrative commands
// with and the projectors verify them with.
func (r *run) writeAdminKey() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	path := filepath.Join(r.cfg.Dir, "admin.key")
	if err := os.WriteFile(path, []byte("chaos "+hex.EncodeToString(b[:])+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing the admin key file: %w", err)
	}
	return path, nil
}

// writeTokens gives the workload a fresh bearer token and writes the API
// nodes' tokens file (its SHA-256 only) into the run's directory, so the
// run goes through authentication as production does.
func (r *run) writeTokens() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	r.token = hex.EncodeToString(b[:])
	sum := sha256.Sum256([]byte(r.token))
	path := filepath.Join(r.cfg.Dir, "tokens")
	if err := os.WriteFile(path, []byte("chaos claim,read,admin "+hex.EncodeToString(sum[:])+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing the tokens file: %w", err)
	}
	return path, nil
}
