package upgrade_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/kafka"
	"github.com/usernameregistry/registry/internal/testenv"
	"github.com/usernameregistry/registry/projector"
	"github.com/usernameregistry/registry/projector/rebuild"
	"github.com/usernameregistry/registry/projector/upgrade"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const partitions = 4

var keys, _ = events.ParseAdminKeys(strings.NewReader("test " + strings.Repeat("5a", 32)))

// The names of the version-1 registry: pairs version 1 lets two users
// hold and version 2 puts under one key, a name version 2 refuses whose
// canonical form has a key of its own, and a name nothing happens to.
// The last ones have a key of their own that version 2 changes (the digit
// 0 maps to O under 1, to o under 2), so they move partitions alone: while
// one partition has activated and another not, the old and the new row of
// one canonical form exist at once (found by BenchmarkUpgrade).
var v1Names = []string{"dog", "d0g", "κοσμος", "ΚΟΣΜΟΣ", "doge", "d0gе", "lumen11", "Iumen11", "alice", "name10", "bob0", "x0y0", "z00"}

// wantGroups are the collision groups diff must list: exactly these.
var wantGroups = [][]string{{"Iumen11", "lumen11"}, {"d0g", "dog"}, {"d0gе", "doge"}, {"ΚΟΣΜΟΣ", "κοσμος"}}

type registry struct {
	t     *testing.T
	pool  *pgxpool.Pool
	opts  []kgo.Opt
	prod  *kgo.Client // manual partitioner, for claims
	up    *kgo.Client // default partitioner, for the upgrade
	stop  func()
	users map[string]string
}

// newV1Registry starts a new registry under username policy version 1
// (a projector told to decide under 1 records it in the new database)
// and fills it with v1Names, one user each.
func newV1Registry(t *testing.T) *registry {
	t.Helper()
	return newV1RegistryWith(t, v1Names)
}

// newV1RegistryWith is newV1Registry filled with names.
func newV1RegistryWith(t *testing.T, names []string) *registry {
	t.Helper()
	brokers, prod := testenv.Topics(t, partitions)
	pool, _ := testenv.Database(t)
	r := &registry{t: t, pool: pool, opts: kafka.ClientOptions(brokers, testenv.Logger(t)), prod: prod, users: map[string]string{}}
	up, err := kgo.NewClient(append(r.opts, kgo.ProducerLinger(0))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	r.up = up
	r.stop = r.startProjector(1)
	t.Cleanup(func() { r.stop() })
	for _, name := range names {
		r.users[name] = uuid.NewSHA1(uuid.NameSpaceOID, []byte(name)).String()
		if d := r.claim(1, r.users[name], name); d.Outcome != events.OutcomeRegistered {
			t.Fatalf("version 1 refused %q: %+v", name, d)
		}
	}
	return r
}

// startProjector starts a projector (told the policy version when not 0)
// and returns what stops it; a second call of stop does nothing.
func (r *registry) startProjector(version int) func() {
	p, err := projector.New(projector.Config{Kafka: r.opts, Partitions: partitions, PolicyVersion: version, AdminKeys: keys,
		Group: "upgrade-" + uuid.NewString(), SessionTimeout: 6 * time.Second, Logger: testenv.Logger(r.t)}, r.pool)
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	stopped := false
	return func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				r.t.Errorf("projector: %v", err)
			}
		}
	}
}

// claim writes a claim made under version and waits for its decision.
func (r *registry) claim(version int, userID, typed string) *events.Decision {
	r.t.Helper()
	name, err := username.MustVersion(version).Normalize(typed)
	if err != nil {
		r.t.Fatalf("%q under version %d: %v", typed, version, err)
	}
	id := uuid.NewSHA1(uuid.NameSpaceOID, fmt.Appendf(nil, "%d/%s/%s", version, userID, typed)).String()
	rec, err := events.ClaimRecord(&events.ClaimSubmitted{RequestID: id, UserID: userID, Username: typed,
		Canonical: name.Canonical, Key: name.Key, PolicyVersion: version, SubmittedAt: time.Now()})
	if err != nil {
		r.t.Fatal(err)
	}
	rec.Partition = events.Partition(rec.Key, partitions)
	if err := r.prod.ProduceSync(context.Background(), rec).FirstErr(); err != nil {
		r.t.Fatal(err)
	}
	return r.decision(id, rec.Partition)
}

// decision waits for the decision of requestID in partition: the ledger's,
// or a published one that is not stored (policy_upgrading).
func (r *registry) decision(requestID string, partition int32) *events.Decision {
	r.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var v []byte
		err := r.pool.QueryRow(context.Background(), `SELECT decision FROM requests WHERE request_id = $1 AND claim_partition = $2`, requestID, partition).Scan(&v)
		if err == nil {
			d := &events.Decision{}
			if err := json.Unmarshal(v, d); err != nil {
				r.t.Fatal(err)
			}
			return d
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			r.t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.t.Fatalf("no decision for %s", requestID)
	return nil
}

func (r *registry) upgrade(failpoint string) (*upgrade.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a stuck partition fails the test, not the run
	defer cancel()
	return upgrade.Run(ctx, upgrade.Config{Pool: r.pool, Producer: r.up, Partitions: partitions, To: 2, AdminKeys: keys,
		Poll: 20 * time.Millisecond, Failpoint: func(name string) error {
			if name == failpoint {
				return errCrash
			}
			return nil
		}})
}

var errCrash = errors.New("crash at the failpoint")

// snapshot is the projection's holders and policy state, in a form that
// does not depend on offsets (a resumed upgrade writes copies, which move
// later records).
func (r *registry) snapshot() []string {
	r.t.Helper()
	rows, err := r.pool.Query(context.Background(), `
SELECT format('%s %s %s %s %s granted=%s grandfathered=%s invalid=%s', username, canonical, key, user_id, request_id, granted_under, grandfathered, invalid) FROM usernames
UNION ALL SELECT format('partition %s version=%s frozen=%s staged=%s', partition, policy_version, frozen_to, staged) FROM claim_partitions
UNION ALL SELECT format('policy %s initial=%s upgrading=%s', version, initial_version, upgrading_to) FROM username_policy
UNION ALL SELECT format('carried %s', count(*)) FROM carried`)
	if err != nil {
		r.t.Fatal(err)
	}
	s, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		r.t.Fatal(err)
	}
	slices.Sort(s)
	return s
}

// TestUpgradeV1Registry: a registry filled under version 1 with names
// that collide under version 2: diff lists exactly those groups; after the
// upgrade every holder keeps the name, a third user's claim of either
// spelling is refused, and new claims are decided under version 2; a
// second run changes nothing.
func TestUpgradeV1Registry(t *testing.T) {
	r := newV1Registry(t)
	ctx := context.Background()
	rep, err := upgrade.Diff(ctx, r.pool, partitions, 2)
	if err != nil {
		t.Fatal(err)
	}
	var groups [][]string
	for _, g := range rep.Groups {
		groups = append(groups, g.Holders)
	}
	slices.SortFunc(groups, func(a, b []string) int { return strings.Compare(a[0], b[0]) })
	if fmt.Sprint(groups) != fmt.Sprint(wantGroups) {
		t.Errorf("diff's groups = %q, want %q", groups, wantGroups)
	}
	var invalid []string
	for _, e := range rep.Invalid {
		invalid = append(invalid, e.Username)
	}
	slices.Sort(invalid)
	if want := []string{"Iumen11", "d0gе", "ΚΟΣΜΟΣ"}; !slices.Equal(invalid, want) {
		t.Errorf("diff's invalid names = %q, want %q", invalid, want)
	}
	shadows := map[string]string{}
	for _, e := range rep.Shadows {
		shadows[e.Username] = e.Key
	}
	if len(shadows) != 2 || shadows["Iumen11"] != "lurnenll" || shadows["ΚΟΣΜΟΣ"] != "koʃrnoʃ" {
		t.Errorf("diff's shadows = %q, want Iumen11 under lumen11's key and ΚΟΣΜΟΣ under its displayed one", shadows)
	}
	if n, err := r.pool.Exec(ctx, `SELECT 1 FROM carried`); err != nil || n.RowsAffected() != 0 {
		t.Fatalf("diff changed something: %v %v", n, err)
	}

	res, err := r.upgrade("")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("upgrade: %d carried in %s, longest partition wait %s", res.Carried, res.Elapsed, res.LongestWait)
	var held int
	if err := r.pool.QueryRow(ctx, `SELECT count(DISTINCT user_id) FROM usernames WHERE user_id = ANY($1::uuid[])`, values(r.users)).Scan(&held); err != nil || held != len(v1Names) {
		t.Fatalf("after the upgrade %d of %d holders hold their names (%v)", held, len(v1Names), err)
	}
	var grand int
	var moved int
	if err := r.pool.QueryRow(ctx, `SELECT count(*) FROM usernames WHERE username = ANY($1) AND policy_version = 2`, []string{"name10", "bob0", "x0y0", "z00"}).Scan(&moved); err != nil || moved != 4 {
		t.Errorf("names carried alone under version 2: %d (%v), want 4", moved, err)
	}
	if err := r.pool.QueryRow(ctx, `SELECT count(*) FROM usernames WHERE grandfathered`).Scan(&grand); err != nil || grand != 9 {
		t.Errorf("grandfathered rows: %d (%v), want 9 (four groups of two, Iumen11 a shadow in one, and ΚΟΣΜΟΣ's shadow alone)", grand, err)
	}
	third := uuid.NewString()
	for _, c := range []struct{ typed, reason string }{
		{"dog", events.ReasonTaken}, {"d0g", events.ReasonTaken}, {"κοσμος", events.ReasonTaken}, {"κοσμοσ", events.ReasonTaken},
		{"doge", events.ReasonTaken}, {"lumen11", events.ReasonTaken}, {"iumen11", events.ReasonTaken}, {"DOG", events.ReasonTaken},
		{"newname", ""},
	} {
		d := r.claim(2, third, c.typed)
		switch {
		case d.PolicyVersion != 2:
			t.Errorf("%q decided under version %d", c.typed, d.PolicyVersion)
		case c.reason == "" && d.Outcome != events.OutcomeRegistered:
			t.Errorf("claim of the free %q: %+v", c.typed, d)
		case c.reason != "" && d.Reason != c.reason:
			t.Errorf("third user's claim of %q: %s %s, want %s", c.typed, d.Outcome, d.Reason, c.reason)
		}
	}
	after := r.snapshot()
	if _, err := r.upgrade(""); err != nil {
		t.Fatalf("second run: %v", err)
	}
	if again := r.snapshot(); !slices.Equal(again, after) {
		t.Errorf("a second run changed the projection:\n got %q\nwant %q", again, after)
	}
}

// TestUpgradeResumesAfterCrash stops the upgrade at each of its failpoints
// (as a crash would), runs it again, and reaches the same end state as an
// upgrade that never stopped. Each registry is made in a subtest of its
// own, one after another: on a shared broker (Apache Kafka) a registry
// holds the broker until its test ends, so one held by this test itself
// would make every later one wait for ever.
func TestUpgradeResumesAfterCrash(t *testing.T) {
	var want []string
	t.Run("without a crash", func(t *testing.T) {
		clean := newV1Registry(t)
		if _, err := clean.upgrade(""); err != nil {
			t.Fatal(err)
		}
		want = clean.snapshot()
	})
	if want == nil {
		t.FailNow()
	}
	for _, fp := range upgrade.Failpoints {
		t.Run(fp, func(t *testing.T) {
			r := newV1Registry(t)
			if _, err := r.upgrade(fp); !errors.Is(err, errCrash) {
				t.Fatalf("upgrade did not stop at %s: %v", fp, err)
			}
			if _, err := r.upgrade(""); err != nil {
				t.Fatalf("resumed upgrade: %v", err)
			}
			if got := r.snapshot(); !slices.Equal(got, want) {
				t.Errorf("end state after a crash at %s differs:\n got %q\nwant %q", fp, got, want)
			}
		})
	}
}

func values(m map[string]string) []string {
	var vs []string
	for _, v := range m {
		vs = append(vs, v)
	}
	return vs
}

// TestReplayAndRebuildAgree: after an upgrade and traffic under the new
// version (a group member releasing, a third user's claims), a rebuild
// from registrations finds no difference with the live projection and
// swaps in to the same holders and partition policy state, and a
// replay of the claims from the beginning decides every record again to
// the recorded bytes and builds the same holders.
func TestReplayAndRebuildAgree(t *testing.T) {
	r := newV1Registry(t)
	ctx := context.Background()
	if _, err := r.upgrade(""); err != nil {
		t.Fatal(err)
	}
	third := uuid.NewString()
	for _, name := range []string{"dog", "newname", "κοσμοσ"} {
		r.claim(2, third, name)
	}
	// d0g's holder releases (under version 2, in dog's partition).
	rel := &events.ClaimSubmitted{RequestID: uuid.NewString(), UserID: r.users["d0g"], Username: "d0g", Canonical: "d0g", Key: "dog", PolicyVersion: 2}
	rec, err := events.CommandRecord(events.TypeReleaseSubmitted, rel)
	if err != nil {
		t.Fatal(err)
	}
	rec.Partition = events.Partition(rec.Key, partitions)
	if err := r.prod.ProduceSync(ctx, rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if d := r.decision(rel.RequestID, rec.Partition); d.Outcome != events.OutcomeReleased {
		t.Fatalf("release of d0g: %+v", d)
	}
	if got := r.claim(2, third, "d0g"); got.Reason != events.ReasonConfusable {
		t.Errorf("claim of d0g after its release, beside dog: %+v", got)
	}
	publishAndStop(t, r)
	cfg := rebuildAndVerify(t, r)
	before := r.snapshot()
	// The partitions' policy state follows from the decisions: the swap
	// brings it back even when the live rows lost it.
	if _, err := r.pool.Exec(ctx, `UPDATE claim_partitions SET policy_version = NULL`); err != nil {
		t.Fatal(err)
	}
	if _, err := rebuild.Swap(ctx, cfg); err != nil {
		t.Fatalf("swap: %v", err)
	}
	if after := r.snapshot(); !slices.Equal(after, before) {
		t.Errorf("the swapped-in rebuild differs from the live projection:\n got %q\nwant %q", after, before)
	}
	replayMatchesLive(t, r, cfg)
}

// TestRestartWithUnstoredAnswerAtTheTail: a claim written to a frozen
// partition is answered policy_upgrading, which the ledger does not keep;
// a projector assigned the partition afterwards must not take the missing
// ledger row for lost claims (it halted with ErrDataLoss before), and the
// upgrade then finishes.
func TestRestartWithUnstoredAnswerAtTheTail(t *testing.T) {
	r := newV1Registry(t)
	ctx := context.Background()
	if _, err := r.upgrade(upgrade.FailAfterFrozen); !errors.Is(err, errCrash) {
		t.Fatalf("upgrade did not stop after the freeze: %v", err)
	}
	name, _ := username.MustVersion(1).Normalize("zed")
	rec, err := events.ClaimRecord(&events.ClaimSubmitted{RequestID: uuid.NewString(), UserID: uuid.NewString(), Username: "zed",
		Canonical: name.Canonical, Key: name.Key, PolicyVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	rec.Partition = events.Partition(rec.Key, partitions)
	res := r.prod.ProduceSync(ctx, rec)
	if err := res.FirstErr(); err != nil {
		t.Fatal(err)
	}
	offset := res[0].Record.Offset
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var next int64
		var outbox int
		if err := r.pool.QueryRow(ctx, `SELECT next_offset, (SELECT count(*) FROM outbox) FROM claim_partitions WHERE partition = $1`, rec.Partition).Scan(&next, &outbox); err != nil {
			t.Fatal(err)
		}
		if next > offset && outbox == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the claim in the frozen partition was not answered")
		}
	}
	var stored int
	if err := r.pool.QueryRow(ctx, `SELECT count(*) FROM requests WHERE username = 'zed'`).Scan(&stored); err != nil || stored != 0 {
		t.Fatalf("policy_upgrading answer stored %d times (%v)", stored, err)
	}
	r.stop()
	r.stop = r.startProjector(0)
	if _, err := r.upgrade(""); err != nil {
		t.Fatalf("the upgrade after the restart: %v", err)
	}
}
