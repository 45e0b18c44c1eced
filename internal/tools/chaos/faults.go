package chaos

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/kafkalaunch"
	"github.com/usernameregistry/registry/projector"
)

// Fault types the injector picks from.
const (
	FaultKillProjector  = "kill-projector"  // kill -9 a projector, restart it (sometimes with a crash failpoint armed)
	FaultKillAPI        = "kill-api"        // kill -9 an API node, restart it
	FaultPauseProjector = "pause-projector" // SIGSTOP a projector past the session timeout, SIGCONT after the rebalance
	FaultKillBroker     = "kill-broker"     // kill -9 the broker, restart it on the same port and data
	FaultPGCrash        = "pg-crash"        // immediate stop of PostgreSQL (pg_ctl -m immediate), restart
	FaultPGTerminate    = "pg-terminate"    // terminate every client backend, repeatedly: connections lost mid-commit
	FaultProxyLatency   = "proxy-latency"   // delay traffic between projectors and broker
	FaultProxyDrop      = "proxy-drop"      // cut and refuse connections between projectors and broker
	// FaultBrokerOutage keeps the brokers unable to take writes for
	// longer than the API's write bound (10 s): on kfake the broker is
	// killed, on Apache Kafka two of the three nodes are. Every claim
	// sent meanwhile must still be answered within its bound (property j).
	FaultBrokerOutage = "broker-outage"

	// Apache Kafka only.
	FaultKillClaimsLeader        = "kill-claims-leader"        // kill -9 the leader of a claims partition, restart it
	FaultKillRegistrationsLeader = "kill-registrations-leader" // kill -9 the leader of a registrations partition, restart it
	FaultPauseBroker             = "pause-broker"              // SIGSTOP a node past its broker session (9 s), SIGCONT
	FaultRollingRestart          = "rolling-restart"           // controlled restart of every node, one after another
)

// PausedInRound is not a fault type of its own: it counts the
// pause-projector faults that stopped a projector with a batch in flight
// (pauseInRound). The first of every run does, so every run wakes a zombie
// that the fence must refuse; a run that paused a projector but never in
// a round fails as too short.
const PausedInRound = "pause-projector-in-round"

// The Kafka a run uses (Config.Kafka).
const (
	KafkaEmbedded = "kfake"
	KafkaApache   = "apache"
)

// FaultTypes lists every fault type of a run on kfake.
var FaultTypes = []string{FaultKillProjector, FaultKillAPI, FaultPauseProjector, FaultKillBroker, FaultPGCrash, FaultPGTerminate, FaultProxyLatency, FaultProxyDrop, FaultBrokerOutage}

// ApacheFaultTypes lists every fault type of a run on Apache Kafka: the
// process and database faults, and the broker faults only a replicated
// cluster has. The proxy fronts a single broker, so its faults are
// kfake's.
var ApacheFaultTypes = []string{FaultKillProjector, FaultKillAPI, FaultPauseProjector, FaultPGCrash, FaultPGTerminate,
	FaultBrokerOutage, FaultKillClaimsLeader, FaultKillRegistrationsLeader, FaultPauseBroker, FaultRollingRestart}

var failpointNames = []string{projector.FailBeforeCommit, projector.FailAfterCommit, projector.FailAfterPublish}

const sigcont = syscall.SIGCONT

type faultCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (f *faultCounter) add(kind string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n[kind]++
}

func (f *faultCounter) count(kind string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n[kind]
}

func (f *faultCounter) snapshot() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.n)
}

// inject alternates fault-free periods with random subsets of faults,
// each healed before the next quiet period, until ctx ends. The faults
// are dealt from a shuffled deck of every configured type, dealt again
// once empty, so a run injects each type once before any repeats: a
// short run still exercises all of them (with every type, about 45 s).
// The first fault is pause-projector, on its own, whose first pause stops
// a projector with a batch in flight (pauseInRound): every run, however
// short, wakes a zombie early.
func (r *run) inject(ctx context.Context) {
	rng := rand.New(rand.NewPCG(r.cfg.Seed, 0xfa17))
	var deck []string
	alone := slices.Contains(r.cfg.Faults, FaultPauseProjector) // the first fault, on its own: records must flow
	if alone {
		deck = append(deck, FaultPauseProjector)
	}
	for {
		if !sleep(ctx, time.Duration(1500+rng.IntN(3000))*time.Millisecond) {
			return
		}
		n := 1 + rng.IntN(min(2, len(r.cfg.Faults)))
		if alone {
			n, alone = 1, false
		}
		kinds := make([]string, 0, n)
		for len(kinds) < n {
			if len(deck) == 0 {
				for _, i := range rng.Perm(len(r.cfg.Faults)) {
					deck = append(deck, r.cfg.Faults[i])
				}
			}
			if slices.Contains(kinds, deck[0]) { // the same fault twice at once: next round
				break
			}
			kinds, deck = append(kinds, deck[0]), deck[1:]
		}
		var wg sync.WaitGroup
		for _, k := range kinds {
			seed := rng.Uint64()
			wg.Go(func() { r.fault(ctx, k, rand.New(rand.NewPCG(seed, 1))) })
		}
		wg.Wait()
	}
}

// fault injects one fault and heals it. The hold times do not stop at the
// end of the load: a fault always ends healed.
func (r *run) fault(ctx context.Context, kind string, rng *rand.Rand) {
	r.faults.add(kind)
	hold := func(min, spread time.Duration) { time.Sleep(min + time.Duration(rng.Int64N(int64(spread)))) }
	switch kind {
	case FaultKillProjector:
		p := r.projectors[rng.IntN(len(r.projectors))]
		r.logf("fault: kill -9 %s", p.name)
		p.kill()
		hold(500*time.Millisecond, 2500*time.Millisecond)
		var env []string
		if rng.IntN(3) == 0 {
			fp := fmt.Sprintf("%s:crash@%d", failpointNames[rng.IntN(len(failpointNames))], 1+rng.IntN(5))
			env = append(env, "REGISTRY_FAILPOINTS="+fp)
			r.faults.add("failpoint-armed")
			r.logf("fault: %s restarts with REGISTRY_FAILPOINTS=%s", p.name, fp)
		}
		p.up(env...)
	case FaultKillAPI:
		a := r.apis[rng.IntN(len(r.apis))]
		r.logf("fault: kill -9 %s", a.name)
		a.kill()
		hold(500*time.Millisecond, 2*time.Second)
		a.up()
	case FaultPauseProjector:
		p := r.projectors[rng.IntN(len(r.projectors))]
		if r.faults.count(PausedInRound) == 0 && r.pauseInRound(p, hold) {
			return
		}
		r.logf("fault: SIGSTOP %s", p.name)
		p.signal(syscall.SIGSTOP)
		hold(r.cfg.SessionTimeout+2*time.Second, 3*time.Second)
		r.logf("fault: SIGCONT %s", p.name)
		p.signal(syscall.SIGCONT)
	case FaultKillBroker:
		r.logf("fault: kill -9 broker")
		r.broker.kill()
		hold(500*time.Millisecond, 2500*time.Millisecond)
		r.broker.up()
	case FaultPGCrash:
		r.logf("fault: PostgreSQL immediate stop")
		r.pg.crash()
		hold(500*time.Millisecond, 2500*time.Millisecond)
		r.pg.ensureUp(context.WithoutCancel(ctx), r)
		r.logf("fault: PostgreSQL back")
	case FaultPGTerminate:
		end := time.Now().Add(2*time.Second + time.Duration(rng.Int64N(int64(2*time.Second))))
		killed := 0
		for time.Now().Before(end) {
			killed += r.pg.terminateBackends(context.WithoutCancel(ctx))
			time.Sleep(time.Duration(50+rng.IntN(250)) * time.Millisecond)
		}
		r.logf("fault: terminated %d backends", killed)
	case FaultProxyLatency:
		d := time.Duration(50+rng.IntN(400)) * time.Millisecond
		r.logf("fault: %s latency between projectors and broker", d)
		r.proxy.SetLatency(d)
		hold(2*time.Second, 4*time.Second)
		r.proxy.Heal()
	case FaultProxyDrop:
		r.logf("fault: cutting projectors off the broker")
		r.proxy.Drop()
		hold(time.Second, 3*time.Second)
		r.proxy.Heal()
	case FaultBrokerOutage:
		r.brokerOutage(ctx, hold)
	case FaultKillClaimsLeader, FaultKillRegistrationsLeader:
		topic := events.TopicClaims
		if kind == FaultKillRegistrationsLeader {
			topic = events.TopicRegistrations
		}
		n := r.leaderOf(ctx, topic, int32(rng.IntN(r.cfg.Partitions)))
		if n == nil {
			r.logf("fault: no leader found for a %s partition; killing a random node", topic)
			n = r.cluster.Nodes()[rng.IntN(3)]
		}
		r.logf("fault: kill -9 Kafka node %d (a %s leader)", n.ID(), topic)
		n.Kill()
		hold(500*time.Millisecond, 2500*time.Millisecond)
		r.startNode(ctx, n)
	case FaultPauseBroker:
		n := r.cluster.Nodes()[rng.IntN(3)]
		r.logf("fault: SIGSTOP Kafka node %d", n.ID())
		n.Pause()
		hold(11*time.Second, 3*time.Second) // past broker.session.timeout.ms (9 s): the controller fences it
		r.logf("fault: SIGCONT Kafka node %d", n.ID())
		n.Resume()
	case FaultRollingRestart:
		for _, n := range r.cluster.Nodes() {
			r.logf("fault: rolling restart: stopping Kafka node %d", n.ID())
			n.Stop()
			r.startNode(ctx, n)
		}
	}
}

// pauseInRound makes p a zombie with a batch in flight: a random SIGSTOP
// mostly lands while p waits for records, and a projector woken from there
// learns of the rebalance before it decides anything, so the fence is
// never put to the test. p is restarted with the failpoint
// before-begin:stop, which stops it at its first round with the records
// in hand and no transaction open; once it has stopped, it is held past
// the session timeout, so the group gives its partitions to another
// member, and woken: it goes on to commit its stale batch at once, which
// the fence must refuse (property (i) sees any write it lets through).
// It reports false, having restarted p without the failpoint, when p did
// not stop within 45 s (no records reached it).
func (r *run) pauseInRound(p *proc, hold func(min, spread time.Duration)) bool {
	spec := projector.FailBeforeBegin + ":stop"
	r.logf("fault: %s restarts with REGISTRY_FAILPOINTS=%s, to stop with a batch in flight", p.name, spec)
	p.kill()
	p.arm("REGISTRY_FAILPOINTS=" + spec) // for every start until it stops: a start can fail while the broker is down
	p.up()
	for deadline := time.Now().Add(45 * time.Second); !p.stopped(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			r.logf("fault: %s did not stop within 45s; restarting it without the failpoint", p.name)
			p.kill()
			p.disarm()
			p.up()
			return false
		}
	}
	p.disarm()
	r.faults.add(PausedInRound)
	r.logf("fault: %s stopped itself with a batch in flight", p.name)
	hold(r.cfg.SessionTimeout+2*time.Second, 3*time.Second)
	r.logf("fault: SIGCONT %s (a zombie with a batch in flight)", p.name)
	p.signal(syscall.SIGCONT)
	return true
}

// brokerOutage keeps writes impossible for 12 to 15 s, longer than the
// API's 10 s write bound.
func (r *run) brokerOutage(ctx context.Context, hold func(min, spread time.Duration)) {
	if r.cluster == nil {
		r.logf("fault: broker outage: kill -9 broker for longer than the write bound")
		r.broker.kill()
		hold(12*time.Second, 3*time.Second)
		r.broker.up()
		return
	}
	// Two of three down: no partition has min.insync.replicas=2 left.
	nodes := r.cluster.Nodes()[:2]
	r.logf("fault: broker outage: kill -9 Kafka nodes %d and %d for longer than the write bound", nodes[0].ID(), nodes[1].ID())
	for _, n := range nodes {
		n.Kill()
	}
	hold(12*time.Second, 3*time.Second)
	for _, n := range nodes {
		r.startNode(ctx, n)
	}
}

// startNode starts a stopped Kafka node again and logs a failure; heal
// tries again at the end of the run.
func (r *run) startNode(ctx context.Context, n *kafkalaunch.Node) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
	defer cancel()
	if err := n.Start(sctx); err != nil {
		r.logf("fault: restarting Kafka node %d: %v", n.ID(), err)
	}
}

// leaderOf returns the node leading topic's partition part, or nil.
func (r *run) leaderOf(ctx context.Context, topic string, part int32) *kafkalaunch.Node {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(r.seeds...))
	if err != nil {
		return nil
	}
	defer cl.Close()
	tds, err := kadm.NewClient(cl).ListTopics(ctx, topic)
	if err != nil {
		return nil
	}
	for _, p := range tds[topic].Partitions {
		if p.Partition == part {
			return r.cluster.Node(p.Leader)
		}
	}
	return nil
}

// terminateBackends ends every other client connection, whatever it is
// doing, and returns how many it ended.
func (d *database) terminateBackends(ctx context.Context) int {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := d.conn(ctx)
	if err != nil {
		return 0
	}
	defer conn.Close(ctx)
	rows, _ := conn.Query(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND datname = current_database()`)
	n := 0
	var ok bool
	pgx.ForEachRow(rows, []any{&ok}, func() error { //nolint:errcheck // a fault: failures are fine
		if ok {
			n++
		}
		return nil
	})
	return n
}
