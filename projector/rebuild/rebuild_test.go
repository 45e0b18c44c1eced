package rebuild_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/kafka"
	"github.com/usernameregistry/registry/internal/testenv"
	"github.com/usernameregistry/registry/internal/tools/loadgen"
	"github.com/usernameregistry/registry/projector"
	"github.com/usernameregistry/registry/projector/rebuild"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const testPartitions = 4

// env is one test's registry: topics on a broker, a migrated database.
type env struct {
	t    *testing.T
	pool *pgxpool.Pool
	opts []kgo.Opt
	prod *kgo.Client
	seed uint64
	keys *events.AdminKeys // signs (the tests) and verifies (projector, replay) administrative commands; nil: none
}

func setup(t *testing.T) *env {
	t.Helper()
	brokers, prod := testenv.Topics(t, testPartitions)
	pool, _ := testenv.Database(t)
	return &env{t: t, pool: pool, opts: kafka.ClientOptions(brokers, testenv.Logger(t)), prod: prod, seed: 1}
}

func (e *env) config() rebuild.Config {
	return rebuild.Config{Kafka: e.opts, Pool: e.pool, Samples: 5, AdminKeys: e.keys, Logger: testenv.Logger(e.t)}
}

// generate writes n claims (and, with decisions, their decisions).
func (e *env) generate(n int, decisions bool) {
	e.t.Helper()
	e.seed++
	_, err := loadgen.Generate(context.Background(), loadgen.GenerateConfig{Kafka: e.opts, Claims: n, Decisions: decisions, Seed: e.seed,
		HotNames: 20, Retry: 0.1, Conflict: 0.02, Poison: 0.01, Start: time.Now().Add(-time.Hour)})
	if err != nil {
		e.t.Fatalf("generating claims: %v", err)
	}
}

// projector runs a projector until the returned stop is called.
func (e *env) projector() (stop func()) {
	e.t.Helper()
	p, err := projector.New(projector.Config{Kafka: e.opts, Partitions: testPartitions, Logger: testenv.Logger(e.t),
		SessionTimeout: 6 * time.Second, AdminKeys: e.keys}, e.pool)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("projector: %v", err)
			}
		})
	}
	e.t.Cleanup(stop)
	return stop
}

// awaitDecided waits until every claim is decided and published.
func (e *env) awaitDecided() {
	e.t.Helper()
	cl, err := kgo.NewClient(e.opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ends, err := rebuild.Ends(context.Background(), kadm.NewClient(cl), events.TopicClaims)
		if err != nil {
			e.t.Fatal(err)
		}
		var decided, outbox int64
		err = e.pool.QueryRow(context.Background(), `SELECT coalesce(sum(next_offset), 0)::bigint, (SELECT count(*) FROM outbox) FROM claim_partitions`).Scan(&decided, &outbox)
		if err != nil {
			e.t.Fatal(err)
		}
		if decided == ends.Total() && outbox == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("claims not decided in time: %d of %d decided, %d unpublished", decided, ends.Total(), outbox)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// snapshot is the live projection, row for row, as text.
func (e *env) snapshot(schema string) map[string][]string {
	e.t.Helper()
	out := map[string][]string{}
	for table, order := range map[string]string{"usernames": "canonical", "requests": "claim_partition, claim_offset", "claim_partitions": "partition",
		"holds": "key", "reservations": "key", "rename_locks": "key"} {
		cols := "t.*"
		if table == "claim_partitions" {
			cols = "partition, next_offset" // the epoch is bumped by the swap, on purpose
		}
		rows, err := e.pool.Query(context.Background(), fmt.Sprintf(`SELECT ROW(%s)::text FROM %s.%s t ORDER BY %s`, cols, pgx.Identifier{schema}.Sanitize(), table, order))
		if err != nil {
			e.t.Fatal(err)
		}
		out[table], err = pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			e.t.Fatal(err)
		}
	}
	return out
}

func (e *env) exec(sql string) {
	e.t.Helper()
	if _, err := e.pool.Exec(context.Background(), sql); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

func sameRows(t *testing.T, what string, got, want map[string][]string) {
	t.Helper()
	for table := range want {
		if !slices.Equal(got[table], want[table]) {
			t.Errorf("%s: %s differs: %d rows, want %d", what, table, len(got[table]), len(want[table]))
			for i := range min(len(got[table]), len(want[table])) {
				if got[table][i] != want[table][i] {
					t.Errorf("first difference at row %d:\n got %s\nwant %s", i, got[table][i], want[table][i])
					break
				}
			}
		}
	}
}

func diffCount(r *rebuild.VerifyReport, kind string) int64 {
	for _, d := range r.Diffs {
		if d.Kind == kind {
			return d.Count
		}
	}
	return -1
}

// TestRebuildAfterTruncateIsIdentical: decide claims with a real
// projector, truncate the live projection, rebuild, verify and swap, and
// get the same rows back; a projector started afterwards carries on.
func TestRebuildAfterTruncateIsIdentical(t *testing.T) {
	t.Parallel()
	e := setup(t)
	stop := e.projector()
	e.generate(1500, false)
	e.awaitDecided()
	stop()
	want := e.snapshot("public")
	if len(want["usernames"]) < 100 || len(want["requests"]) < 1000 {
		t.Fatalf("too few rows to be a test: %d usernames, %d requests", len(want["usernames"]), len(want["requests"]))
	}

	e.exec(`TRUNCATE usernames, requests, claim_partitions`)
	rep, err := rebuild.Build(context.Background(), e.config())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Ledger != int64(len(want["requests"])) || rep.Holders != int64(len(want["usernames"])) || rep.Unreadable != 0 || rep.Contradicting != 0 {
		t.Errorf("build report %+v; want %d ledger rows, %d holders, nothing unreadable", rep, len(want["requests"]), len(want["usernames"]))
	}
	sameRows(t, "shadow", e.snapshot(rebuild.ShadowSchema), want)

	v, err := rebuild.Verify(context.Background(), e.config())
	if err != nil {
		t.Fatal(err)
	}
	if !v.Drift() || diffCount(v, "usernames only shadow") != int64(len(want["usernames"])) || diffCount(v, "requests only shadow") != int64(len(want["requests"])) {
		t.Errorf("verify against an empty live projection: drift %v, %+v", v.Drift(), v.Diffs)
	}

	sw, err := rebuild.Swap(context.Background(), e.config())
	if err != nil {
		t.Fatal(err)
	}
	sameRows(t, "live after swap", e.snapshot("public"), want)
	for _, p := range sw.Partitions {
		if p.Live != -1 || p.Epoch != 1 {
			t.Errorf("partition %+v: want no live row before and epoch 1 after", p)
		}
	}
	var old int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM `+pgx.Identifier{sw.OldSchema}.Sanitize()+`.usernames`).Scan(&old); err != nil || old != 0 {
		t.Errorf("the replaced (truncated) tables in %s: %d rows, %v", sw.OldSchema, old, err)
	}
	if _, err := rebuild.Verify(context.Background(), e.config()); !errors.Is(err, rebuild.ErrShadowIncomplete) {
		t.Errorf("verify after the swap consumed the shadow: %v, want rebuild.ErrShadowIncomplete", err)
	}

	// The projector resumes from the rebuilt offsets: nothing is decided
	// twice (a second decision would break the ledger's keys) and new
	// claims are decided.
	e.projector()
	e.generate(300, false)
	e.awaitDecided()
	rep2, err := rebuild.Build(context.Background(), e.config())
	if err != nil {
		t.Fatal(err)
	}
	v2, err := rebuild.Verify(context.Background(), e.config())
	if err != nil {
		t.Fatal(err)
	}
	if v2.Drift() || len(v2.Positions) != 0 || rep2.Contradicting != 0 {
		t.Errorf("a second rebuild differs from live: %+v %+v", v2.Diffs, v2.Positions)
	}
}

// TestRebuildToleratesCopiesAndPoison: copies of decisions and records
// that are not decisions in registrations change nothing in the shadow,
// and are counted and described.
func TestRebuildToleratesCopiesAndPoison(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.generate(800, true)
	if _, err := rebuild.Build(context.Background(), e.config()); err != nil {
		t.Fatal(err)
	}
	want := e.snapshot(rebuild.ShadowSchema)

	// Republish the first 50 decisions of partition 1 (a crash between
	// publish and outbox delete does this), and add records no consumer
	// can use.
	var copies []*kgo.Record
	err := rebuild.Read(context.Background(), e.opts, events.TopicRegistrations, rebuild.Offsets{}, rebuild.Offsets{1: 50}, func(_ int32, recs []*kgo.Record) error {
		for _, r := range recs {
			copies = append(copies, events.DecisionRecord(r.Key, r.Partition, string(r.Headers[0].Value), r.Value))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	poison := []*kgo.Record{
		{Topic: events.TopicRegistrations, Partition: 2, Value: []byte("not json"), Headers: []kgo.RecordHeader{{Key: events.HeaderType, Value: []byte(events.TypeClaimRejected)}}},
		{Topic: events.TopicRegistrations, Partition: 2, Value: []byte(`{}`)},
		{Topic: events.TopicRegistrations, Partition: 2, Value: []byte(`{"request_id":"x","outcome":"registered"}`),
			Headers: []kgo.RecordHeader{{Key: events.HeaderType, Value: []byte(events.TypeUsernameRegistered)}, {Key: events.HeaderSchema, Value: []byte("2")}}},
	}
	// A decision filed under the wrong partition, and one contradicting
	// the decision already recorded at its position.
	wrong := slices.Clone(copies[0].Value)
	poison = append(poison, events.DecisionRecord(copies[0].Key, 3, string(copies[0].Headers[0].Value), wrong))
	contra := strings.Replace(string(copies[1].Value), `"claim_partition"`, `"detail":"forged","claim_partition"`, 1)
	poison = append(poison, events.DecisionRecord(copies[1].Key, 1, events.TypeClaimRejected, []byte(contra)))
	if err := e.prod.ProduceSync(context.Background(), append(copies, poison...)...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	rep, err := rebuild.Build(context.Background(), e.config())
	if err != nil {
		t.Fatal(err)
	}
	sameRows(t, "shadow with copies and poison", e.snapshot(rebuild.ShadowSchema), want)
	if rep.Unreadable != 4 || len(rep.UnreadableSamples) != 4 {
		t.Errorf("unreadable %d: %q; want 4", rep.Unreadable, rep.UnreadableSamples)
	}
	if rep.Contradicting != 1 || len(rep.ContradictingSamples) != 1 {
		t.Errorf("contradicting copies %d %q, want 1", rep.Contradicting, rep.ContradictingSamples)
	}
	if rep.Copies < 51 {
		t.Errorf("copies skipped: %d, want at least the 51 republished", rep.Copies)
	}
	for _, s := range rep.UnreadableSamples {
		if !strings.HasPrefix(s, "registrations ") {
			t.Errorf("sample %q does not say where the record is", s)
		}
	}
}

// TestInterruptedRebuildLeavesLiveUntouched: cancelling a rebuild leaves
// the live projection as it was and the shadow unusable; a rerun starts
// clean.
func TestInterruptedRebuildLeavesLiveUntouched(t *testing.T) {
	t.Parallel()
	e := setup(t)
	stop := e.projector()
	e.generate(600, false)
	e.awaitDecided()
	stop()
	want := e.snapshot("public")

	ctx, cancel := context.WithCancel(context.Background())
	cfg := e.config()
	cfg.Progress = cancelOnAdd{cancel}
	if _, err := rebuild.Build(ctx, cfg); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted build: %v, want context.Canceled", err)
	}
	sameRows(t, "live after an interrupted build", e.snapshot("public"), want)
	if _, err := rebuild.Swap(context.Background(), e.config()); !errors.Is(err, rebuild.ErrShadowIncomplete) {
		t.Fatalf("swap of an interrupted build: %v, want rebuild.ErrShadowIncomplete", err)
	}
	if _, err := rebuild.Build(context.Background(), e.config()); err != nil {
		t.Fatalf("rerun: %v", err)
	}
	sameRows(t, "rerun", e.snapshot(rebuild.ShadowSchema), want)
}

type cancelOnAdd struct{ cancel context.CancelFunc }

func (cancelOnAdd) Start(string, int64) {}
func (c cancelOnAdd) Add(int)           { c.cancel() }
func (cancelOnAdd) Finish()             {}

// TestGuardsRefuseIncompleteLog: a topic that lost its first records, or
// that may lose records, is refused with a message that says so.
func TestGuardsRefuseIncompleteLog(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.generate(50, true)
	adm := kadm.NewClient(e.prod)
	ctx := context.Background()
	if _, err := rebuild.CheckLog(ctx, adm, events.Topics{}); err != nil {
		t.Fatalf("complete log refused: %v", err)
	}
	resp, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "retention.ms", Value: kadm.StringPtr("604800000")}}, events.TopicRegistrations)
	if err == nil {
		err = resp[0].Err
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rebuild.Build(ctx, e.config()); !errors.Is(err, rebuild.ErrIncompleteLog) || !strings.Contains(err.Error(), "retention.ms=604800000") {
		t.Errorf("finite retention: %v", err)
	}
	if _, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "retention.ms", Value: kadm.StringPtr("-1")}}, events.TopicRegistrations); err != nil {
		t.Fatal(err)
	}
	del, err := adm.DeleteRecords(ctx, kadm.Offsets{events.TopicClaims: {0: {At: 1}}})
	if err == nil {
		err = del.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	_, err = rebuild.Replay(ctx, rebuild.ReplayConfig{Config: e.config()})
	if !errors.Is(err, rebuild.ErrIncompleteLog) || !strings.Contains(err.Error(), "claims partition 0 starts at offset 1") {
		t.Errorf("deleted records: %v", err)
	}
}

// TestRebuildWhileClaimsFlowThenSwap: claims keep arriving and being
// decided while the shadow is built and swapped in. The swap fences the
// running projector, which rejoins its group by itself and carries on
// from the rebuilt offsets, on the same pool (whose connections hold
// prepared statements on the replaced tables). Afterwards no decision is
// lost, changed or made twice: the replay audit agrees with every
// recorded decision, and a fresh rebuild equals the live projection.
func TestRebuildWhileClaimsFlowThenSwap(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.projector()
	e.generate(1000, false)
	e.awaitDecided()
	store := projector.NewStore(e.pool)

	flowCtx, endFlow := context.WithCancel(context.Background())
	flowing := make(chan error, 1)
	go func() {
		var err error
		for i := 0; flowCtx.Err() == nil && err == nil; i++ {
			_, err = loadgen.Generate(flowCtx, loadgen.GenerateConfig{Kafka: e.opts, Claims: 40, Seed: uint64(1000 + i), HotNames: 20, Retry: 0.1,
				Start: time.Now().Add(-time.Minute)})
			if err == nil {
				_, err = store.Holder(flowCtx, "nobody") // a cached statement on the live tables
			}
		}
		if flowCtx.Err() != nil {
			err = nil
		}
		flowing <- err
	}()

	if _, err := rebuild.Build(context.Background(), e.config()); err != nil {
		t.Fatal(err)
	}
	sw, err := rebuild.Swap(context.Background(), e.config())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("swap: caught up %d from registrations and %d from the outbox; waited %v, held %v", sw.CaughtUp, sw.FromOutbox, sw.LockWait, sw.Held)
	for _, p := range sw.Partitions {
		if p.Epoch < 2 || p.Final < p.Live {
			t.Errorf("partition %+v: want the epoch bumped and no position moved back", p)
		}
	}
	time.Sleep(300 * time.Millisecond) // more claims after the swap
	endFlow()
	if err := <-flowing; err != nil {
		t.Fatalf("claims flow: %v", err)
	}
	e.awaitDecided()
	if _, err := store.Holder(context.Background(), "nobody"); err != nil {
		t.Fatalf("the API's cached statements after the swap: %v", err)
	}

	audit, err := rebuild.Replay(context.Background(), rebuild.ReplayConfig{Config: e.config()})
	if err != nil {
		t.Fatal(err)
	}
	if audit.Diverged() || audit.Pending != 0 || audit.Matched != audit.Decided || audit.Unreadable.Count != 0 {
		t.Errorf("replay after the swap: %+v", audit)
	}
	if _, err := rebuild.Build(context.Background(), e.config()); err != nil {
		t.Fatal(err)
	}
	v, err := rebuild.Verify(context.Background(), e.config())
	if err != nil {
		t.Fatal(err)
	}
	if v.Drift() || len(v.Positions) != 0 || v.NotCompared != 0 {
		t.Errorf("rebuild after the swap differs from live: %+v %+v", v.Diffs, v.Positions)
	}
}

// TestReplayAgreesAcrossProjectorRestarts: claims decided by projectors
// that were stopped and started between and during batches are decided
// the same on replay, and the replayed projection equals the live one.
func TestReplayAgreesAcrossProjectorRestarts(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for range 4 {
		stop := e.projector()
		e.generate(400, false)
		time.Sleep(20 * time.Millisecond)
		stop() // often with claims still undecided
	}
	e.projector()
	e.awaitDecided()
	rep, err := rebuild.Replay(context.Background(), rebuild.ReplayConfig{Config: e.config()})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Diverged() || rep.Claims != 1600 || rep.Matched != rep.Decided || rep.Pending != 0 || rep.ClaimVersions[username.Latest] == 0 {
		t.Errorf("replay: %+v", rep)
	}
	live, replayed := e.snapshot("public"), e.snapshot(rebuild.ReplaySchema)
	delete(live, "claim_partitions") // the replay's positions are the claims' ends, equal here
	sameRows(t, "replayed projection", replayed, live)
}

// TestReplayReportsDivergenceAndPolicyVersions: a recorded decision that
// differs from the replayed one is reported with the name it changes;
// claims made under another policy version are refused unless
// --policy-version is given, which then lists the names that would change.
func TestReplayReportsDivergenceAndPolicyVersions(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.generate(300, true)
	rep, err := rebuild.Replay(context.Background(), rebuild.ReplayConfig{Config: e.config()})
	if err != nil || rep.Diverged() || rep.Matched != rep.Decided {
		t.Fatalf("generated decisions do not replay: %v %+v", err, rep)
	}

	// A claim made under policy version 1, with a forged registration:
	// version 1 accepted "Iumen11", which version 2 refuses.
	const id, user = "9a1c0d7e-0000-4000-8000-000000000001", "9a1c0d7e-0000-4000-8000-0000000000aa"
	c, err := events.ClaimRecord(&events.ClaimSubmitted{RequestID: id, UserID: user,
		Username: "Iumen11", Canonical: "iumen11", Key: "iurnenll", PolicyVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	c.Partition = events.Partition(c.Key, testPartitions)
	if err := e.prod.ProduceSync(context.Background(), c).FirstErr(); err != nil {
		t.Fatal(err)
	}
	at := c.Timestamp.UTC().Truncate(time.Millisecond)
	testenv.PublishDecisions(t, e.prod, time.Time{}, &events.Decision{RequestID: id,
		UserID: user, Username: "Iumen11", Canonical: "iumen11", Outcome: events.OutcomeRegistered,
		HolderRequestID: id, RegisteredAt: &at, ClaimPartition: c.Partition, ClaimOffset: c.Offset, PolicyVersion: 1})

	_, err = rebuild.Replay(context.Background(), rebuild.ReplayConfig{Config: e.config()})
	if !errors.Is(err, rebuild.ErrPolicyVersion) || !strings.Contains(err.Error(), "--policy-version 2") {
		t.Fatalf("claims under version 1: %v, want a refusal naming --policy-version", err)
	}
	if _, err := rebuild.Replay(context.Background(), rebuild.ReplayConfig{Config: e.config(), PolicyVersion: username.Latest + 1}); err == nil {
		t.Fatal("--policy-version of a version this build does not have accepted")
	}
	rep, err = rebuild.Replay(context.Background(), rebuild.ReplayConfig{Config: e.config(), PolicyVersion: 2})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Divergent.Count != 1 || rep.NamesChanged.Count != 1 || !strings.HasPrefix(rep.NamesChanged.Samples[0], "iumen11: recorded holder 9a1c0d7e-0000-4000-8000-0000000000aa, replay gives it to nobody (invalid)") {
		t.Errorf("divergence %+v, names changed %+v", rep.Divergent, rep.NamesChanged)
	}
	if rep.ClaimVersions[1] != 1 {
		t.Errorf("claim versions %v, want one claim under version 1", rep.ClaimVersions)
	}
}
