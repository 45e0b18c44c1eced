package upgrade_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/testenv"
	"github.com/usernameregistry/registry/projector"
	"github.com/usernameregistry/registry/projector/internal/projection"
	"github.com/usernameregistry/registry/projector/rebuild"
)

// shadowNames fill the version-1 registry of the shadow tests: names
// version 2 refuses whose displayed form has another key than their
// canonical form (Iumen11 displays like lumen11), alone, and one beside
// the holder of what it looks like (lumen22 and Iumen22).
var shadowNames = []string{"Iumen11", "Ilama7", "Ionic5", "lumen22", "Iumen22", "alice"}

// command writes a command of type typ made under version 2 for typed
// (read as Inspect reads it when version 2 refuses it, as the API writes
// a carried name's), signed when sign, and returns its request_id and
// partition; edit may change the body before it is written.
func (r *registry) command(typ, userID, typed string, sign bool, edit func(*events.ClaimSubmitted)) (string, int32) {
	r.t.Helper()
	policy := username.MustVersion(2)
	u, err := policy.Normalize(typed)
	if err != nil {
		var ok bool
		if u, ok = policy.Inspect(typed); !ok {
			r.t.Fatalf("version 2 cannot read %q", typed)
		}
	}
	c := &events.ClaimSubmitted{RequestID: uuid.NewString(), UserID: userID, Username: typed, Canonical: u.Canonical, Key: u.Key,
		PolicyVersion: 2, SubmittedAt: time.Now()}
	if edit != nil {
		edit(c)
	}
	rec, err := events.CommandRecord(typ, c)
	if err != nil {
		r.t.Fatal(err)
	}
	rec.Partition = events.Partition(rec.Key, partitions)
	if sign {
		keys.Sign(rec)
	}
	if err := r.prod.ProduceSync(context.Background(), rec).FirstErr(); err != nil {
		r.t.Fatal(err)
	}
	return c.RequestID, rec.Partition
}

// finalDecision waits for a final decision of requestID in partition (a
// rename's ledger row says renaming until its step 3 replaces it).
func (r *registry) finalDecision(requestID string, partition int32) *events.Decision {
	r.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if d := r.decision(requestID, partition); events.Final(d.Outcome) {
			return d
		}
	}
	r.t.Fatalf("no final decision for %s", requestID)
	return nil
}

// followUp waits for the decision of the shadow follow-up that the
// decision of cause (in causePartition) wrote for the shadow under key.
func (r *registry) followUp(cause string, causePartition int32, key string) *events.Decision {
	r.t.Helper()
	return r.decision(projection.ShadowID(cause, causePartition, key), events.Partition([]byte(key), partitions))
}

// TestShadowFollowsItsName: after an upgrade to version 2, a name version
// 2 refuses also blocks what it looks like (its shadow); once its holder
// releases it, or renames away from it, the look-alike is free; a transfer
// gives the shadow to the new holder, and it still blocks; in a group, the
// member's shadow goes and the other member keeps the key. A rebuild
// from registrations and a replay of claims agree with the live
// projection afterwards.
func TestShadowFollowsItsName(t *testing.T) {
	r := newV1RegistryWith(t, shadowNames)
	ctx := context.Background()
	if _, err := r.upgrade(""); err != nil {
		t.Fatal(err)
	}
	// probe's claims are refused; b's succeed. (A claim's request_id is
	// derived from its user and name: b asking twice would be a retry.)
	probe, b, c := uuid.NewString(), uuid.NewString(), uuid.NewString()

	// Release.
	if d := r.claim(2, probe, "lumen11"); d.Reason != events.ReasonConfusable {
		t.Fatalf("a claim of lumen11 beside Iumen11's shadow: %+v", d)
	}
	id, p := r.command(events.TypeReleaseSubmitted, r.users["Iumen11"], "Iumen11", false, nil)
	if d := r.decision(id, p); d.Outcome != events.OutcomeReleased {
		t.Fatalf("A's release of Iumen11: %+v", d)
	}
	if d := r.followUp(id, p, "lurnenll"); d.Outcome != events.OutcomeShadowDropped {
		t.Fatalf("the follow-up of the release: %+v", d)
	}
	if d := r.claim(2, b, "lumen11"); d.Outcome != events.OutcomeRegistered {
		t.Errorf("B's claim of lumen11 after Iumen11's release: %+v", d)
	}

	// Rename away, to a name version 2 accepts.
	id, p = r.command(events.TypeRenameSubmitted, r.users["Ilama7"], "Ilama7", false, func(cs *events.ClaimSubmitted) {
		to, err := username.MustVersion(2).Normalize("newllama7")
		if err != nil {
			t.Fatal(err)
		}
		cs.Rename = &events.RenameStep{RequestID: cs.RequestID, From: cs.Username, FromCanonical: cs.Canonical, FromKey: cs.Key,
			To: to.Typed, ToCanonical: to.Canonical, ToKey: to.Key}
	})
	if d := r.finalDecision(id, p); d.Outcome != events.OutcomeRenamed {
		t.Fatalf("the rename of Ilama7: %+v", d)
	}
	if d := r.followUp(id, p, "llarna7"); d.Outcome != events.OutcomeShadowDropped {
		t.Fatalf("the follow-up of the rename: %+v", d)
	}
	if d := r.claim(2, b, "llama7"); d.Outcome != events.OutcomeRegistered {
		t.Errorf("B's claim of llama7 after the rename away from Ilama7: %+v", d)
	}

	// Transfer to C: the shadow names C and still blocks.
	id, p = r.command(events.TypeTransferSubmitted, c, "Ionic5", true, nil)
	if d := r.decision(id, p); d.Outcome != events.OutcomeTransferred {
		t.Fatalf("the transfer of Ionic5 to C: %+v", d)
	}
	if d := r.followUp(id, p, "lonic5"); d.Outcome != events.OutcomeShadowTransferred {
		t.Fatalf("the follow-up of the transfer: %+v", d)
	}
	store := projector.NewStore(r.pool)
	reg, err := store.HolderOfKey(ctx, "lonic5")
	if err != nil || reg == nil || reg.UserID != c || reg.Username != "Ionic5" || reg.RequestID != id || !reg.Grandfathered {
		t.Errorf("the holder of lonic5 (GET /v1/usernames/lonic5) after the transfer: %+v (%v), want C's shadow under the transfer", reg, err)
	}
	var invalid bool
	if err := r.pool.QueryRow(ctx, `SELECT invalid FROM usernames WHERE key = 'ionic5'`).Scan(&invalid); err != nil || !invalid {
		t.Errorf("the transferred Ionic5 is no longer marked refused by version 2 (%v): its new holder could not release it through the API", err)
	}
	if d := r.claim(2, probe, "lonic5"); d.Reason != events.ReasonConfusable {
		t.Errorf("B's claim of lonic5 after the transfer: %+v", d)
	}

	// A group: Iumen22's shadow leaves lumen22's group; lumen22 still holds.
	id, p = r.command(events.TypeReleaseSubmitted, r.users["Iumen22"], "Iumen22", false, nil)
	if d := r.decision(id, p); d.Outcome != events.OutcomeReleased {
		t.Fatalf("the release of Iumen22: %+v", d)
	}
	if d := r.followUp(id, p, "lurnen22"); d.Outcome != events.OutcomeShadowDropped {
		t.Fatalf("the follow-up of Iumen22's release: %+v", d)
	}
	reg, err = store.HolderOfKey(ctx, "lurnen22")
	if err != nil || reg == nil || reg.Username != "lumen22" || reg.UserID != r.users["lumen22"] || len(reg.Members) > 1 {
		t.Errorf("the holder of lumen22 after Iumen22's release: %+v (%v), want lumen22's holder alone (no grandfathered_with)", reg, err)
	}
	if d := r.claim(2, probe, "lumen22"); d.Reason != events.ReasonTaken {
		t.Errorf("B's claim of lumen22, still held: %+v", d)
	}

	// Nothing else moved: every other holder keeps its rows.
	var rows []string
	q, err := r.pool.Query(ctx, `SELECT username || ' ' || key || ' ' || user_id FROM usernames ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	for q.Next() {
		var s string
		if err := q.Scan(&s); err != nil {
			t.Fatal(err)
		}
		rows = append(rows, s)
	}
	want := []string{"Ionic5 ionic5 " + c, "Ionic5 lonic5 " + c, "alice alice " + r.users["alice"], "lumen11 lurnenll " + b,
		"lumen22 lurnen22 " + r.users["lumen22"], "llama7 llarna7 " + b, "newllama7 newllarna7 " + r.users["Ilama7"]}
	slices.Sort(want)
	if !slices.Equal(rows, want) {
		t.Errorf("holders after the shadows followed their names:\n got %q\nwant %q", rows, want)
	}

	replayAndRebuildAgree(t, r)
}

// replayAndRebuildAgree stops r's projector once everything is published,
// then checks that rebuild --verify finds no drift, and that a replay
// decides every record again to the recorded bytes and builds the same
// holders.
func replayAndRebuildAgree(t *testing.T, r *registry) {
	t.Helper()
	publishAndStop(t, r)
	replayMatchesLive(t, r, rebuildAndVerify(t, r))
}

// rebuildAndVerify runs registry rebuild and rebuild --verify on r's
// topics and database, checks that there is no drift, and returns the
// rebuild's configuration.
func rebuildAndVerify(t *testing.T, r *registry) rebuild.Config {
	t.Helper()
	ctx := context.Background()
	cfg := rebuild.Config{Kafka: r.opts, Pool: r.pool, AdminKeys: keys, Logger: testenv.Logger(t)}
	if _, err := rebuild.Build(ctx, cfg); err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	v, err := rebuild.Verify(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if v.Drift() || v.LiveUsernames != v.ShadowUsernames || v.LiveUsernames == 0 {
		t.Errorf("rebuild differs from the live projection: %+v", v)
	}
	return cfg
}

// publishAndStop waits (up to 30 s) until the projector has published
// its outbox, then stops it.
func publishAndStop(t *testing.T, r *registry) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for n := 1; n > 0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if err := r.pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox`).Scan(&n); err != nil {
			t.Fatal(err)
		}
	}
	r.stop()
}

// replayMatchesLive replays the topics (registry replay) and checks that
// every record is decided again to its recorded bytes and that the
// replayed holders are the live ones, row for row.
func replayMatchesLive(t *testing.T, r *registry, cfg rebuild.Config) {
	t.Helper()
	ctx := context.Background()
	rep, err := rebuild.Replay(ctx, rebuild.ReplayConfig{Config: cfg})
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	if rep.Diverged() || rep.Matched == 0 {
		t.Errorf("replay diverged: %+v", rep)
	}
	var differ int
	err = r.pool.QueryRow(ctx, `SELECT count(*) FROM (
		(SELECT canonical, key, user_id, request_id, grandfathered, invalid, granted_under FROM usernames
		 EXCEPT SELECT canonical, key, user_id, request_id, grandfathered, invalid, granted_under FROM registry_replay.usernames)
		UNION ALL
		(SELECT canonical, key, user_id, request_id, grandfathered, invalid, granted_under FROM registry_replay.usernames
		 EXCEPT SELECT canonical, key, user_id, request_id, grandfathered, invalid, granted_under FROM usernames)) d`).Scan(&differ)
	if err != nil || differ != 0 {
		t.Errorf("the replayed holders differ from the live ones in %d rows (%v)", differ, err)
	}
}
