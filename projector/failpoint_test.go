package projector_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/kafka"
	"github.com/usernameregistry/registry/internal/testenv"
	"github.com/usernameregistry/registry/internal/tools/chaos"
	"github.com/usernameregistry/registry/projector"
)

const crashPartitions = 3

// crashWorld is a broker with the topics, a database, and claims written:
// a name contested by two users, a retry, a look-alike and a poison record.
type crashWorld struct {
	brokers []string
	pool    *pgxpool.Pool
	url     string
	claims  int
	// failpoint is the hook the projectors started by start get.
	failpoint func(name string) error
}

func newCrashWorld(t *testing.T) *crashWorld {
	t.Helper()
	brokers, prod := testenv.Topics(t, crashPartitions)
	pool, url := testenv.Database(t)
	u1, u2, r1 := uuid.NewString(), uuid.NewString(), uuid.NewString()
	var recs []*kgo.Record
	for _, c := range [][3]string{{r1, u1, "grace"}, {uuid.NewString(), u2, "Grace"}, {r1, u1, "grace"}, {uuid.NewString(), u2, "gr\u0251ce"}, {uuid.NewString(), u2, "heidi"}} {
		name, err := username.Normalize(c[2])
		if err != nil {
			t.Fatal(err)
		}
		rec, err := events.ClaimRecord(&events.ClaimSubmitted{RequestID: c[0], UserID: c[1], Username: c[2], Canonical: name.Canonical, Key: name.Key, PolicyVersion: username.Latest})
		if err != nil {
			t.Fatal(err)
		}
		rec.Partition = events.Partition(rec.Key, crashPartitions)
		recs = append(recs, rec)
	}
	recs = append(recs, &kgo.Record{Topic: events.TopicClaims, Partition: 1, Key: []byte("x"), Value: []byte("{not json")})
	if err := prod.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	return &crashWorld{brokers: brokers, pool: pool, url: url, claims: len(recs)}
}

// crash runs a projector in a child process with spec set and waits for
// it to crash at the failpoint.
func (w *crashWorld) crash(t *testing.T, spec string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PROJECTOR_TEST_FAILPOINTS="+spec, "PROJECTOR_TEST_BROKERS="+strings.Join(w.brokers, ","),
		"PROJECTOR_TEST_DATABASE="+w.url, fmt.Sprintf("PROJECTOR_TEST_PARTITIONS=%d", crashPartitions))
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 137 {
		t.Fatalf("helper projector with %s: %v, want exit status 137\n%s", spec, err, out)
	}
}

func (w *crashWorld) count(t *testing.T, sql string) int {
	t.Helper()
	var n int
	if err := w.pool.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// recover runs a healthy projector until every claim is decided and
// published, then checks every property of docs/guarantees.md over the
// topics and tables.
func (w *crashWorld) recover(t *testing.T) {
	t.Helper()
	w.run(t)
	w.check(t)
}

func (w *crashWorld) settle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ok, why := chaos.Settled(context.Background(), w.brokers, w.url)
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not settled after 60s: %s", why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestCrashBeforeCommit: the process dies with its batch written but not
// committed. PostgreSQL rolls it back, nothing of it is visible, and the
// next owner decides the same claims once.
func TestCrashBeforeCommit(t *testing.T) {
	t.Parallel()
	w := newCrashWorld(t)
	w.crash(t, projector.FailBeforeCommit+":crash")
	if n := w.count(t, `SELECT count(*) FROM requests`) + w.count(t, `SELECT count(*) FROM outbox`) + w.count(t, `SELECT coalesce(sum(next_offset), 0) FROM claim_partitions`); n != 0 {
		t.Fatalf("the crashed batch left %d rows or offsets behind", n)
	}
	w.recover(t)
}

// TestCrashAfterCommit: the process dies after COMMIT, before publishing.
// The decisions are durable and wait in the outbox; the next owner
// publishes them and does not decide those claims again.
func TestCrashAfterCommit(t *testing.T) {
	t.Parallel()
	w := newCrashWorld(t)
	w.crash(t, projector.FailAfterCommit+":crash")
	if w.count(t, `SELECT count(*) FROM requests`) == 0 || w.count(t, `SELECT count(*) FROM outbox`) == 0 {
		t.Fatal("the crash after commit left no committed, unpublished decisions")
	}
	w.recover(t)
}

// TestCrashAfterPublish: the process dies after Kafka acknowledged the
// decisions, before deleting them from the outbox. The next owner
// publishes them again; the copies are identical (the checker compares
// every copy byte for byte).
func TestCrashAfterPublish(t *testing.T) {
	t.Parallel()
	w := newCrashWorld(t)
	w.crash(t, projector.FailAfterPublish+":crash")
	if w.count(t, `SELECT count(*) FROM outbox`) == 0 {
		t.Fatal("the crash after publish left the outbox empty")
	}
	w.recover(t)
}

// start starts a projector on w; stop stops it and returns what Run
// returned, done receives that when Run returns by itself.
func (w *crashWorld) start(t *testing.T) (stop func() error, done <-chan error) {
	t.Helper()
	log := testenv.Logger(t)
	p, err := projector.New(projector.Config{Kafka: kafka.ClientOptions(w.brokers, log), Partitions: crashPartitions,
		SessionTimeout: 6 * time.Second, RetryBackoff: 20 * time.Millisecond, Failpoint: w.failpoint, Logger: log}, w.pool)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() { ch <- p.Run(ctx) }()
	return func() error { cancel(); return <-ch }, ch
}

// run runs a projector on w until the test ends.
func (w *crashWorld) run(t *testing.T) {
	t.Helper()
	stop, _ := w.start(t)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("projector: %v", err)
		}
	})
}

// check runs the chaos checker over the settled topics and tables.
func (w *crashWorld) check(t *testing.T) {
	t.Helper()
	w.settle(t)
	in, err := chaos.Collect(context.Background(), w.brokers, w.url, crashPartitions)
	if err != nil {
		t.Fatal(err)
	}
	if rep := chaos.Check(in); rep.Anomalies() != 0 || rep.Claims != w.claims || rep.Holders != 2 {
		var b strings.Builder
		rep.Print(&b)
		t.Fatalf("%d claims, %d names held (want %d and 2):\n%s", rep.Claims, rep.Holders, w.claims, b.String())
	}
}

// TestConnectionLostDuringCommit: the database connection is cut while a
// batch's COMMIT is on its way, so the projector cannot know whether it
// committed. It must re-read the partition's stored position before it
// decides again: deciding from its own idea of the position would either
// repeat a committed batch or be refused by the compare-and-set forever.
// Two cases: the commit was lost (the connection died before COMMIT), and
// the commit happened but its answer was lost (after-commit error).
func TestConnectionLostDuringCommit(t *testing.T) {
	for _, tc := range []struct {
		name, at string
	}{{"commit lost", projector.FailBeforeCommit}, {"answer lost", projector.FailAfterCommit}} {
		t.Run(tc.name, func(t *testing.T) {
			w := newCrashWorld(t)
			fired := make(chan int, 1)
			w.failpoint = func(name string) error {
				if name != tc.at {
					return nil
				}
				select {
				case fired <- 0:
				default:
					return nil // once
				}
				if tc.at == projector.FailAfterCommit {
					return errors.New("connection reset while reading the COMMIT answer")
				}
				// The batch's transaction is idle, waiting for COMMIT: cut
				// its backend, as a crashed PostgreSQL or a network cut
				// would.
				var n int
				err := w.pool.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND state = 'idle in transaction' AND pid <> pg_backend_pid()`).Scan(&n)
				if err != nil || n != 1 {
					t.Errorf("terminating the committing backend: %v, %d backends", err, n)
				}
				return nil
			}
			w.run(t)
			w.settle(t)
			if len(fired) != 1 {
				t.Fatal("the fault was never injected")
			}
			w.check(t)
		})
	}
}

// TestHaltsWhenBrokerLostItsTail: a broker that did not fsync restarts
// with an older copy of its log: claims the registry already decided are
// gone. The projector notices that its stored offset is beyond the log
// end and halts, naming the partition and both offsets, instead of
// deciding new claims at offsets that already have decisions.
func TestHaltsWhenBrokerLostItsTail(t *testing.T) {
	t.Parallel()
	dir, snap := t.TempDir(), t.TempDir()
	pool, url := testenv.Database(t)
	c, err := kafka.Embedded(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	addr := c.ListenAddrs()[0]
	var port int
	fmt.Sscan(addr[strings.LastIndex(addr, ":")+1:], &port)
	w := &crashWorld{brokers: []string{addr}, pool: pool, url: url}
	before := produce(t, addr, 0, 6, true)
	c.Close()
	if err := os.CopyFS(snap, os.DirFS(dir)); err != nil { // what a broker without fsync may come back with
		t.Fatal(err)
	}
	if c, err = kafka.Embedded(dir, port); err != nil {
		t.Fatal(err)
	}
	after := produce(t, addr, 6, 15, false)
	stop, _ := w.start(t)
	w.settle(t) // every claim decided: the stored offsets are the "after" ends
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if c, err = kafka.Embedded(snap, port); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	_, done := w.start(t)
	select {
	case err := <-done:
		if !errors.Is(err, projector.ErrOffsetBeyondLogEnd) {
			t.Fatalf("projector stopped with %v, want ErrOffsetBeyondLogEnd", err)
		}
		named := false
		for p := range int32(crashPartitions) {
			want := fmt.Sprintf("partition %d: stored next offset %d, log end offset %d", p, after[p], before[p])
			named = named || after[p] > before[p] && strings.Contains(err.Error(), want)
		}
		if !named {
			t.Fatalf("error %q names no partition that lost claims with its two offsets (before %v, after %v)", err, before, after)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("projector did not halt on a broker that lost its tail")
	}
}

// TestHaltsOnDataLossWhileRunning: the broker comes back with an older
// copy of its log while a projector is consuming, a new leader epoch is
// elected, and new claims are written onto the offsets that were already
// decided. franz-go finds the divergence through the leader epoch and
// rewinds (*kgo.ErrDataLoss); the projector must halt, not take the new
// claims below its stored offset for decided ones. This is what Apache
// Kafka does after an unclean restart of a replication-factor-1 topic,
// replayed on kfake (ShufflePartitionLeaders bumps every leader epoch).
func TestHaltsOnDataLossWhileRunning(t *testing.T) {
	t.Parallel()
	dir, snap := t.TempDir(), t.TempDir()
	pool, url := testenv.Database(t)
	c, err := kafka.Embedded(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	addr := c.ListenAddrs()[0]
	var port int
	fmt.Sscan(addr[strings.LastIndex(addr, ":")+1:], &port)
	w := &crashWorld{brokers: []string{addr}, pool: pool, url: url}
	produce(t, addr, 0, 6, true)
	c.Close()
	if err := os.CopyFS(snap, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	if c, err = kafka.Embedded(dir, port); err != nil {
		t.Fatal(err)
	}
	produce(t, addr, 6, 15, false)
	stop, done := w.start(t)
	halted := false
	t.Cleanup(func() {
		if !halted {
			stop() //nolint:errcheck // the test failed already
		}
	})
	w.settle(t)
	c.Close()
	if c, err = kafka.Embedded(snap, port); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	c.ShufflePartitionLeaders() // a new leader epoch, as an election on Kafka
	produce(t, addr, 15, 45, false)
	select {
	case err := <-done:
		halted = true
		if !errors.Is(err, projector.ErrDataLoss) {
			t.Fatalf("projector stopped with %v, want ErrDataLoss", err)
		}
		t.Log(err)
	case <-time.After(60 * time.Second):
		var undecided int
		if err := pool.QueryRow(context.Background(), `SELECT 45 - count(*) FROM requests`).Scan(&undecided); err == nil {
			t.Logf("%d of 45 claims have no decision", undecided)
		}
		t.Fatal("projector did not halt after the broker lost decided claims and reused their offsets")
	}
}

// TestHaltsOnReusedOffsetsAtAssignment: the broker lost decided claims
// while no projector ran, and new claims refilled the log past the stored
// offsets, so the log-end check passes. On assignment the projector finds
// that the record below its stored offset was never decided, and halts
// instead of resuming above claims nobody decided.
func TestHaltsOnReusedOffsetsAtAssignment(t *testing.T) {
	t.Parallel()
	dir, snap := t.TempDir(), t.TempDir()
	pool, url := testenv.Database(t)
	c, err := kafka.Embedded(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	addr := c.ListenAddrs()[0]
	var port int
	fmt.Sscan(addr[strings.LastIndex(addr, ":")+1:], &port)
	w := &crashWorld{brokers: []string{addr}, pool: pool, url: url}
	produce(t, addr, 0, 6, true)
	c.Close()
	if err := os.CopyFS(snap, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	if c, err = kafka.Embedded(dir, port); err != nil {
		t.Fatal(err)
	}
	produce(t, addr, 6, 15, false)
	stop, _ := w.start(t)
	w.settle(t)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if c, err = kafka.Embedded(snap, port); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	produce(t, addr, 15, 60, false) // past every stored offset
	_, done := w.start(t)
	select {
	case err := <-done:
		if !errors.Is(err, projector.ErrDataLoss) {
			t.Fatalf("projector stopped with %v, want ErrDataLoss", err)
		}
		t.Log(err)
	case <-time.After(60 * time.Second):
		t.Fatal("projector did not halt on offsets that were decided, lost and written again")
	}
}

// produce writes claims i in [from, to) to the broker at addr, creating
// the topics first when create is set, and returns each partition's end
// offset afterwards.
func produce(t *testing.T, addr string, from, to int, create bool) map[int32]int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	if create {
		if _, err := kafka.EnsureTopics(ctx, kadm.NewClient(cl), crashPartitions, -1); err != nil {
			t.Fatal(err)
		}
	}
	for i := from; i < to; i++ {
		name := fmt.Sprintf("ivan%d", i)
		rec, err := events.ClaimRecord(&events.ClaimSubmitted{RequestID: uuid.NewString(), UserID: uuid.NewString(), Username: name,
			Canonical: name, Key: name, PolicyVersion: username.Latest})
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, events.TopicClaims)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out
}

// lockedBuffer is an io.Writer a child process writes to while the test
// reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// processState is the state letter of /proc/<pid>/stat ("T" when stopped).
func processState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
		return string(b[i+2])
	}
	return ""
}

// TestZombieWithBatchInFlightIsFenced: a projector process stops itself
// (failpoint before-begin:stop) with a batch in hand and no transaction
// open, as a frozen VM would. The group gives its partitions to another
// projector, which decides every claim. Woken with SIGCONT, the zombie
// goes on to commit its stale batch at once: the fence must refuse it
// ("partition fenced"), and no update of claim_partitions may move a
// partition back (the chaos harness's stale-write trigger, property (i)).
// This is the situation `make chaos-bugs` needs to catch the fence bug.
func TestZombieWithBatchInFlightIsFenced(t *testing.T) {
	t.Parallel()
	w := newCrashWorld(t)
	if err := chaos.WatchProgress(context.Background(), w.url); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PROJECTOR_TEST_FAILPOINTS="+projector.FailBeforeBegin+":stop", "PROJECTOR_TEST_BROKERS="+strings.Join(w.brokers, ","),
		"PROJECTOR_TEST_DATABASE="+w.url, fmt.Sprintf("PROJECTOR_TEST_PARTITIONS=%d", crashPartitions))
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }() //nolint:errcheck // killed below
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT) //nolint:errcheck // it may be gone
		cmd.Process.Kill()                  //nolint:errcheck
		<-exited
	})
	waitFor := func(what string, d time.Duration, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(d); !ok(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %s; the zombie's output:\n%s", what, d, out.String())
			}
		}
	}
	waitFor("the projector stopping itself with a batch in hand", 60*time.Second, func() bool { return processState(cmd.Process.Pid) == "T" })
	if n := w.count(t, `SELECT count(*) FROM requests`); n != 0 {
		t.Fatalf("the stopped projector decided %d claims before its round began", n)
	}
	w.run(t) // the new owner, once the group has dropped the stopped member
	w.settle(t)
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitFor("the woken zombie being fenced", 30*time.Second, func() bool { return strings.Contains(out.String(), "partition fenced") })
	w.check(t) // every property, (i) no stale write included
}
