package projector_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/kafka"
	"github.com/usernameregistry/registry/internal/testenv"
	"github.com/usernameregistry/registry/projector"
)

// renameWorld: user U holds "from1" and "from2", user V holds "taken";
// two renames are written together: from1 → free1 (succeeds) and
// from2 → taken (refused at step 2, so from2 must be unlocked).
type renameWorld struct {
	*crashWorld
	u, ok, refused string // U's user_id and the two renames' request_ids
}

func newRenameWorld(t *testing.T) *renameWorld {
	t.Helper()
	brokers, prod := testenv.Topics(t, crashPartitions)
	pool, url := testenv.Database(t)
	w := &renameWorld{crashWorld: &crashWorld{brokers: brokers, pool: pool, url: url}, u: uuid.NewString(), ok: uuid.NewString(), refused: uuid.NewString()}
	v := uuid.NewString()
	var recs []*kgo.Record
	add := func(typ, id, user, name string, rename *events.RenameStep) {
		n, err := username.Normalize(name)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := events.CommandRecord(typ, &events.ClaimSubmitted{RequestID: id, UserID: user, Username: name, Canonical: n.Canonical, Key: n.Key,
			PolicyVersion: username.Latest, HoldSeconds: 3600, Rename: rename})
		if err != nil {
			t.Fatal(err)
		}
		rec.Partition = events.Partition(rec.Key, crashPartitions)
		recs = append(recs, rec)
	}
	step := func(id, from, to string) *events.RenameStep {
		f, _ := username.Normalize(from)
		tn, _ := username.Normalize(to)
		return &events.RenameStep{RequestID: id, From: from, FromCanonical: f.Canonical, FromKey: f.Key, To: to, ToCanonical: tn.Canonical, ToKey: tn.Key}
	}
	add(events.TypeClaimSubmitted, uuid.NewString(), w.u, "from1", nil)
	add(events.TypeClaimSubmitted, uuid.NewString(), w.u, "from2", nil)
	add(events.TypeClaimSubmitted, uuid.NewString(), v, "taken", nil)
	add(events.TypeRenameSubmitted, w.ok, w.u, "from1", step(w.ok, "from1", "free1"))
	add(events.TypeRenameSubmitted, w.refused, w.u, "from2", step(w.refused, "from2", "taken"))
	if err := prod.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	return w
}

// TestRenameSurvivesCrashes kills the projector process (exit 137, no
// cleanup, as kill -9) at each durability boundary of each saga step,
// then lets a healthy projector finish. The points: the three failpoints
// (before COMMIT, after COMMIT before the outbox is published, after
// publishing before the outbox rows are deleted) are where a step's
// effects can be half done: nothing durable, durable but the next step
// not yet in claims, or the next step in claims and about to be produced
// again. Each is typed with a step's command type (for example
// "after-commit.RenameTargetClaimed"), so it fires in the first round
// that decides that step: the nine cases cover every step at every
// boundary, and crashedAt checks from the records left in claims that the
// crash hit the step it aimed at. After recovery each rename has ended in
// exactly one of its outcomes, from2 is unlocked, and no name was lost.
func TestRenameSurvivesCrashes(t *testing.T) {
	stepTypes := []string{events.TypeRenameSubmitted, events.TypeRenameTargetClaimed, events.TypeRenameFinishing}
	t.Parallel()
	for _, fp := range []string{projector.FailBeforeCommit, projector.FailAfterCommit, projector.FailAfterPublish} {
		for step := 1; step <= 3; step++ {
			t.Run(fmt.Sprintf("%s@step%d", fp, step), func(t *testing.T) {
				t.Parallel()
				w := newRenameWorld(t)
				w.crash(t, fmt.Sprintf("%s.%s:crash", fp, stepTypes[step-1]))
				w.crashedAt(t, fp, step)
				w.run(t)
				w.checkRenames(t)
			})
		}
	}
}

// crashedAt checks that the crash hit the step it was aimed at, by the
// saga records the dead process left in claims: step-2 records exist once
// a step 1 was published (a crash after-publish of step 1, or any crash in
// a later step) and not before; step-3 records likewise after step 2.
func (w *renameWorld) crashedAt(t *testing.T, fp string, step int) {
	t.Helper()
	written := map[string]int{}
	for _, rec := range readAll(t, w.brokers, events.TopicClaims) {
		written[events.TypeOf(rec)]++
	}
	steps2, steps3 := written[events.TypeRenameTargetClaimed], written[events.TypeRenameFinishing]
	published := step // steps whose next step is in claims
	if fp != projector.FailAfterPublish {
		published = step - 1
	}
	// The two renames may be decided in different rounds, so a published
	// step has at least one next-step record; an unpublished one has none.
	if (published >= 1) != (steps2 > 0) || (published >= 2) != (steps3 > 0) {
		t.Errorf("crash at %s of step %d left %d step-2 and %d step-3 records in claims", fp, step, steps2, steps3)
	}
}

func (w *renameWorld) checkRenames(t *testing.T) {
	t.Helper()
	w.settle(t)
	holders := map[string]string{}
	rows, err := w.pool.Query(context.Background(), `SELECT canonical, user_id::text FROM usernames`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var c, u string
		if err := rows.Scan(&c, &u); err != nil {
			t.Fatal(err)
		}
		holders[c] = u
	}
	if holders["free1"] != w.u || holders["from1"] != "" || holders["from2"] != w.u || holders["taken"] == w.u || holders["taken"] == "" {
		t.Errorf("holders after recovery: %v; want U on free1 and from2, not from1, and taken kept by V", holders)
	}
	if n := w.count(t, `SELECT count(*) FROM rename_locks`); n != 0 {
		t.Errorf("%d rename locks left: a rename is stuck", n)
	}
	if n := w.count(t, `SELECT count(*) FROM holds WHERE canonical = 'from1'`); n != 1 {
		t.Errorf("from1 holds: %d, want 1 (held for U after the rename)", n)
	}
	final := map[string][]string{}
	for _, rec := range readAll(t, w.brokers, events.TopicRegistrations) {
		var d events.Decision
		if err := json.Unmarshal(rec.Value, &d); err != nil {
			t.Fatal(err)
		}
		if d.Command == events.CommandRename && events.Final(d.Outcome) {
			final[d.RequestID] = append(final[d.RequestID], string(rec.Value))
		}
	}
	for id, want := range map[string]string{w.ok: events.OutcomeRenamed, w.refused: events.OutcomeRejected} {
		copies := final[id]
		if len(copies) == 0 {
			t.Errorf("rename %s has no final decision", id)
			continue
		}
		var d events.Decision
		json.Unmarshal([]byte(copies[0]), &d) //nolint:errcheck // parsed above
		if d.Outcome != want {
			t.Errorf("rename %s ended %s, want %s", id, d.Outcome, want)
		}
		for _, c := range copies[1:] {
			if c != copies[0] {
				t.Errorf("rename %s has two different final decisions:\n%s\n%s", id, copies[0], c)
			}
		}
	}
}

// readAll reads a topic from the start to its current end.
func readAll(t *testing.T, brokers []string, topic string) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	recs, err := kafka.ReadToEnd(ctx, topic, kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	return recs
}
