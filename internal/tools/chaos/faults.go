package chaos

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

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
)

// FaultTypes lists every fault type.
var FaultTypes = []string{FaultKillProjector, FaultKillAPI, FaultPauseProjector, FaultKillBroker, FaultPGCrash, FaultPGTerminate, FaultProxyLatency, FaultProxyDrop}

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

func (f *faultCounter) snapshot() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.n)
}

// inject alternates fault-free periods with random subsets of faults,
// each healed before the next quiet period, until ctx ends.
func (r *run) inject(ctx context.Context) {
	rng := rand.New(rand.NewPCG(r.cfg.Seed, 0xfa17))
	for {
		if !sleep(ctx, time.Duration(1500+rng.IntN(3000))*time.Millisecond) {
			return
		}
		n := 1 + rng.IntN(min(2, len(r.cfg.Faults)))
		kinds := make([]string, 0, n)
		for _, i := range rng.Perm(len(r.cfg.Faults))[:n] {
			kinds = append(kinds, r.cfg.Faults[i])
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
	}
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
