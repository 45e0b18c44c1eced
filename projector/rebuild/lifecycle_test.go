package rebuild_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/projector/rebuild"
)

// produceCommand writes one command to its key's partition of claims.
func (e *env) produceCommand(typ, requestID, userID, typed string, hold time.Duration, rename *events.RenameStep) {
	e.t.Helper()
	name, err := username.Normalize(typed)
	if err != nil {
		e.t.Fatal(err)
	}
	rec, err := events.CommandRecord(typ, &events.ClaimSubmitted{RequestID: requestID, UserID: userID, Username: typed,
		Canonical: name.Canonical, Key: name.Key, PolicyVersion: username.Latest, HoldSeconds: int64(hold / time.Second), Rename: rename})
	if err != nil {
		e.t.Fatal(err)
	}
	rec.Partition = events.Partition(rec.Key, testPartitions)
	switch typ {
	case events.TypeReservationSubmitted, events.TypeUnreservation, events.TypeTransferSubmitted:
		e.keys.Sign(rec)
	}
	if err := e.prod.ProduceSync(context.Background(), rec).FirstErr(); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) rename(userID, from, to string) {
	e.t.Helper()
	f, _ := username.Normalize(from)
	tn, _ := username.Normalize(to)
	id := uuid.NewString()
	e.produceCommand(events.TypeRenameSubmitted, id, userID, from, time.Hour,
		&events.RenameStep{RequestID: id, From: from, FromCanonical: f.Canonical, FromKey: f.Key, To: to, ToCanonical: tn.Canonical, ToKey: tn.Key})
}

// TestRebuildAndReplayCoverNamesThatChangeHands: after a run with claims,
// releases into holds, reclaims, renames (succeeding, and refused because
// to is taken), runtime reservations and their removal, and transfers,
// all decided by a real projector, a rebuild gives the live projection
// row for row (holds, reservations and rename locks included), and so
// does the replay audit, which also finds every decision matching.
func TestRebuildAndReplayCoverNamesThatChangeHands(t *testing.T) {
	t.Parallel()
	e := setup(t)
	keys, err := events.ParseAdminKeys(strings.NewReader("test " + strings.Repeat("5a", 32)))
	if err != nil {
		t.Fatal(err)
	}
	e.keys = keys
	e.projector()
	users := make([]string, 6)
	for i := range users {
		users[i] = uuid.NewString()
	}
	name := func(i int) string { return fmt.Sprintf("n%d", i) }
	for i := range 30 {
		e.produceCommand(events.TypeClaimSubmitted, uuid.NewString(), users[i%6], name(i), 0, nil)
	}
	e.awaitDecided()
	for i := 0; i < 30; i += 3 {
		e.produceCommand(events.TypeReleaseSubmitted, uuid.NewString(), users[i%6], name(i), time.Hour, nil)
	}
	for i := 1; i < 30; i += 3 {
		e.rename(users[i%6], name(i), fmt.Sprintf("r%d", i)) // free: renamed
	}
	for i := 2; i < 30; i += 6 {
		e.rename(users[i%6], name(i), name(i+3)) // to is held by another user: taken
	}
	for i := range 5 {
		e.produceCommand(events.TypeReservationSubmitted, uuid.NewString(), "", fmt.Sprintf("res%d", i), 0, nil)
	}
	e.awaitDecided()
	e.produceCommand(events.TypeUnreservation, uuid.NewString(), "", "res0", 0, nil)
	for i := 2; i < 30; i += 6 {
		e.produceCommand(events.TypeTransferSubmitted, uuid.NewString(), users[(i+1)%6], name(i), 0, nil)
	}
	for i := 0; i < 30; i += 6 {
		e.produceCommand(events.TypeClaimSubmitted, uuid.NewString(), users[i%6], name(i), 0, nil)       // the former holder reclaims
		e.produceCommand(events.TypeClaimSubmitted, uuid.NewString(), users[(i+1)%6], name(i+3), 0, nil) // another user: held
	}
	e.awaitDecided()

	live := e.snapshot("public")
	var outcomes = map[string]int{}
	rows, err := e.pool.Query(context.Background(), `SELECT outcome || coalesce(':' || reason, '') FROM requests`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var o string
		if err := rows.Scan(&o); err != nil {
			t.Fatal(err)
		}
		outcomes[o]++
	}
	for _, o := range []string{"released", "renamed", "rejected:taken", "reserved", "unreserved", "transferred", "rejected:held", "registered"} {
		if outcomes[o] == 0 {
			t.Errorf("the run has no %s decision: %v", o, outcomes)
		}
	}
	if len(live["holds"]) == 0 || len(live["reservations"]) != 4 || len(live["rename_locks"]) != 0 {
		t.Errorf("live: %d holds, %d reservations, %d rename locks; want some, 4, 0", len(live["holds"]), len(live["reservations"]), len(live["rename_locks"]))
	}

	if _, err := rebuild.Build(context.Background(), e.config()); err != nil {
		t.Fatal(err)
	}
	sameRows(t, "rebuilt projection", e.snapshot(rebuild.ShadowSchema), live)

	rep, err := rebuild.Replay(context.Background(), rebuild.ReplayConfig{Config: e.config()})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Diverged() || rep.Matched != rep.Decided || rep.Pending != 0 {
		t.Errorf("replay: %+v", rep)
	}
	replayed := e.snapshot(rebuild.ReplaySchema)
	delete(live, "claim_partitions")
	sameRows(t, "replayed projection", replayed, live)
}
