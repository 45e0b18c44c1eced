package chaos

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
)

// lifeWorld is a lifecycle history as registrations records and the
// projection: u1 wins lc-a, releases it into a hold until t0+10s; then
// grant is a win of lc-a by winner at t0+at.
func lifeWorld(t *testing.T, winner string, at time.Duration, u1 string) *Input {
	t.Helper()
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	until, won := t0.Add(10*time.Second), t0.Add(at)
	r1, r2, r3 := uuid.NewString(), uuid.NewString(), uuid.NewString()
	ds := []events.Decision{
		{RequestID: r1, UserID: u1, Canonical: "lc-a", Outcome: events.OutcomeRegistered, HolderRequestID: r1, RegisteredAt: &t0, ClaimOffset: 0},
		{RequestID: r2, UserID: u1, Canonical: "lc-a", Outcome: events.OutcomeReleased, Command: events.CommandRelease, HeldUntil: &until, ClaimOffset: 1},
		{RequestID: r3, UserID: winner, Canonical: "lc-a", Outcome: events.OutcomeRegistered, HolderRequestID: r3, RegisteredAt: &won, ClaimOffset: 2},
	}
	in := &Input{Partitions: testPartitions, Stored: map[int32]int64{}, Ends: map[int32]int64{}}
	for i := range ds {
		b, err := json.Marshal(&ds[i])
		if err != nil {
			t.Fatal(err)
		}
		in.Registrations = append(in.Registrations, events.DecisionRecord([]byte("lc-a"), 0, ds[i].Type(), b))
	}
	in.Usernames = []Holding{{Canonical: "lc-a", UserID: winner, RequestID: r3}}
	return in
}

func lifeCounts(in *Input) map[string]int {
	c := &checker{in: in, r: &Report{Counts: map[string]int{}, Examples: map[string][]string{}}, held: map[string]Holding{}, rows: in.Usernames}
	for _, h := range in.Usernames {
		c.held[h.Canonical] = h
	}
	c.lifecycleChecks()
	return c.r.Counts
}

// TestLifecycleChecks: the lifecycle properties pass on a correct history
// and each catches its own kind of fault: a grant inside another user's
// hold (k), a projection that disagrees with the decisions (m), a rename
// that locked and never ended (l), a release by a user who did not hold
// the name (j).
func TestLifecycleChecks(t *testing.T) {
	t.Parallel()
	u1, u2 := uuid.NewString(), uuid.NewString()
	if got := lifeCounts(lifeWorld(t, u1, 5*time.Second, u1)); got[PropNoGrantInHold]+got[PropKeyOneHolder]+got[PropLifeProjection]+got[PropRenameOutcome] != 0 {
		t.Errorf("the former holder's reclaim inside its hold: %v", got)
	}
	if got := lifeCounts(lifeWorld(t, u2, 11*time.Second, u1)); got[PropNoGrantInHold] != 0 {
		t.Errorf("another user's claim after the hold: %v", got)
	}
	if got := lifeCounts(lifeWorld(t, u2, 5*time.Second, u1)); got[PropNoGrantInHold] != 1 {
		t.Errorf("another user's claim inside the hold: %v, want one (k)", got)
	}
	in := lifeWorld(t, u2, 11*time.Second, u1)
	in.Usernames[0].UserID = u1
	if got := lifeCounts(in); got[PropLifeProjection] != 1 {
		t.Errorf("projection disagreeing: %v, want one (m)", got)
	}
	in = lifeWorld(t, u2, 11*time.Second, u1)
	lock, _ := json.Marshal(&events.Decision{RequestID: uuid.NewString(), UserID: u2, Canonical: "lc-a", From: "lc-a", To: "lc-b", Command: events.CommandRename, Outcome: events.OutcomeRenaming, ClaimOffset: 3})
	in.Registrations = append(in.Registrations, events.DecisionRecord([]byte("lc-a"), 0, events.TypeRenameLocked, lock))
	if got := lifeCounts(in); got[PropRenameOutcome] != 1 {
		t.Errorf("a rename that never ended: %v, want one (l)", got)
	}
	in = lifeWorld(t, u2, 11*time.Second, u1)
	var d events.Decision
	json.Unmarshal(in.Registrations[1].Value, &d) //nolint:errcheck // written above
	d.UserID = u2
	b, _ := json.Marshal(&d)
	in.Registrations[1] = &kgo.Record{Topic: events.TopicRegistrations, Value: b, Headers: in.Registrations[1].Headers}
	if got := lifeCounts(in); got[PropKeyOneHolder] != 1 {
		t.Errorf("a release by a user who did not hold the name: %v, want one (j)", got)
	}
}

// TestLifecycleShadowRows: (n) looks at every row of a lifecycle name, so
// a shadow (a policy upgrade's second row of a refused name, under the
// key it is displayed as) that did not follow its name's transfer is
// caught even when the name's own row is right, and a shadow that
// followed passes.
func TestLifecycleShadowRows(t *testing.T) {
	t.Parallel()
	u1, u2 := uuid.NewString(), uuid.NewString()
	in := lifeWorld(t, u2, 11*time.Second, u1) // lc-a: u1, released, then won by u2
	row := in.Usernames[0]
	shadow := Holding{Canonical: "lc-a", Key: "lc-a-shown", UserID: u2, RequestID: row.RequestID, At: Position{0, 9}}
	in.Usernames = []Holding{shadow, row}
	if got := lifeCounts(in); got[PropLifeProjection] != 0 {
		t.Errorf("a shadow that followed its name: %v", got)
	}
	in.Usernames[0].UserID = u1 // the shadow still names the old holder
	if got := lifeCounts(in); got[PropLifeProjection] != 1 {
		t.Errorf("a shadow that did not follow its name: %v, want one (n)", got)
	}
	if !hasShadow("lcI1-s") || hasShadow("lc1-s") {
		t.Error("hasShadow: lcI1-s is carried with a shadow under version 2, lc1-s is not")
	}
}
