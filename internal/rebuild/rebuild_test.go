package rebuild

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

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/kafka"
	"github.com/usernameregistry/registry/internal/testenv"
	"github.com/usernameregistry/registry/projector"
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
}

func setup(t *testing.T) *env {
	t.Helper()
	brokers, prod := testenv.Topics(t, testPartitions)
	pool, _ := testenv.Database(t)
	return &env{t: t, pool: pool, opts: kafka.ClientOptions(brokers, testenv.Logger(t)), prod: prod, seed: 1}
}

func (e *env) config() Config {
	return Config{Kafka: e.opts, Pool: e.pool, Samples: 5, Logger: testenv.Logger(e.t)}
}

// generate writes n claims (and, with decisions, their decisions).
func (e *env) generate(n int, decisions bool) {
	e.t.Helper()
	e.seed++
	_, err := Generate(context.Background(), GenerateConfig{Kafka: e.opts, Claims: n, Decisions: decisions, Seed: e.seed,
		HotNames: 20, Retry: 0.1, Conflict: 0.02, Poison: 0.01, Start: time.Now().Add(-time.Hour)})
	if err != nil {
		e.t.Fatalf("generating claims: %v", err)
	}
}

// projector runs a projector until the returned stop is called.
func (e *env) projector() (stop func()) {
	e.t.Helper()
	p, err := projector.New(projector.Config{Kafka: e.opts, Partitions: testPartitions, Logger: testenv.Logger(e.t),
		SessionTimeout: 6 * time.Second}, e.pool)
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
		ends, err := Ends(context.Background(), kadm.NewClient(cl), events.TopicClaims)
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
	for table, order := range map[string]string{"usernames": "canonical", "requests": "claim_partition, claim_offset", "claim_partitions": "partition"} {
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

func diffCount(r *VerifyReport, kind string) int64 {
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
	rep, err := Build(context.Background(), e.config())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Ledger != int64(len(want["requests"])) || rep.Holders != int64(len(want["usernames"])) || rep.Unreadable != 0 || rep.Contradicting != 0 {
		t.Errorf("build report %+v; want %d ledger rows, %d holders, nothing unreadable", rep, len(want["requests"]), len(want["usernames"]))
	}
	sameRows(t, "shadow", e.snapshot(ShadowSchema), want)

	v, err := Verify(context.Background(), e.config())
	if err != nil {
		t.Fatal(err)
	}
	if !v.Drift() || diffCount(v, "usernames only shadow") != int64(len(want["usernames"])) || diffCount(v, "requests only shadow") != int64(len(want["requests"])) {
		t.Errorf("verify against an empty live projection: drift %v, %+v", v.Drift(), v.Diffs)
	}

	sw, err := Swap(context.Background(), e.config())
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
	if _, err := Verify(context.Background(), e.config()); !errors.Is(err, ErrShadowIncomplete) {
		t.Errorf("verify after the swap consumed the shadow: %v, want ErrShadowIncomplete", err)
	}

	// The projector resumes from the rebuilt offsets: nothing is decided
	// twice (a second decision would break the ledger's keys) and new
	// claims are decided.
	e.projector()
	e.generate(300, false)
	e.awaitDecided()
	rep2, err := Build(context.Background(), e.config())
	if err != nil {
		t.Fatal(err)
	}
	v2, err := Verify(context.Background(), e.config())
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
	if _, err := Build(context.Background(), e.config()); err != nil {
		t.Fatal(err)
	}
	want := e.snapshot(ShadowSchema)

	// Republish the first 50 decisions of partition 1 (a crash between
	// publish and outbox delete does this), and add records no consumer
	// can use.
	var copies []*kgo.Record
	err := read(context.Background(), e.opts, events.TopicRegistrations, Offsets{}, Offsets{1: 50}, func(_ int32, recs []*kgo.Record) error {
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

	rep, err := Build(context.Background(), e.config())
	if err != nil {
		t.Fatal(err)
	}
	sameRows(t, "shadow with copies and poison", e.snapshot(ShadowSchema), want)
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
	if _, err := Build(ctx, cfg); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted build: %v, want context.Canceled", err)
	}
	sameRows(t, "live after an interrupted build", e.snapshot("public"), want)
	if _, err := Swap(context.Background(), e.config()); !errors.Is(err, ErrShadowIncomplete) {
		t.Fatalf("swap of an interrupted build: %v, want ErrShadowIncomplete", err)
	}
	if _, err := Build(context.Background(), e.config()); err != nil {
		t.Fatalf("rerun: %v", err)
	}
	sameRows(t, "rerun", e.snapshot(ShadowSchema), want)
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
	if _, err := CheckLog(ctx, adm); err != nil {
		t.Fatalf("complete log refused: %v", err)
	}
	resp, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "retention.ms", Value: kadm.StringPtr("604800000")}}, events.TopicRegistrations)
	if err == nil {
		err = resp[0].Err
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Build(ctx, e.config()); !errors.Is(err, ErrIncompleteLog) || !strings.Contains(err.Error(), "retention.ms=604800000") {
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
	_, err = Replay(ctx, ReplayConfig{Config: e.config()})
	if !errors.Is(err, ErrIncompleteLog) || !strings.Contains(err.Error(), "claims partition 0 starts at offset 1") {
		t.Errorf("deleted records: %v", err)
	}
}
