package projector_test

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
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/testenv"
	"github.com/usernameregistry/registry/projector"
	"github.com/usernameregistry/registry/projector/internal/projection"
)

// shadowReleaseID is the request_id of ΚΟΣΜΟΣ's release in every world of
// TestShadowReleaseSurvivesCrashes, so their end states compare.
var shadowReleaseID = uuid.NewSHA1(uuid.NameSpaceOID, []byte("shadow-crash/release")).String()

// upgradedWorld is newUpgradeWorld moved to version 2 by a healthy
// projector, which is stopped again, and the release of ΚΟΣΜΟΣ (a name
// version 2 refuses, carried a second time under koʃrnoʃ, the key it is
// displayed as) written to claims, not yet decided.
func upgradedWorld(t *testing.T) (*upgradeWorld, *kgo.Record) {
	t.Helper()
	w := newUpgradeWorld(t)
	stop := w.projector(t)
	if err := <-w.upgrade(t); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	u, ok := username.MustVersion(2).Inspect("ΚΟΣΜΟΣ")
	if !ok {
		t.Fatal("version 2 cannot read ΚΟΣΜΟΣ")
	}
	holder := uuid.NewSHA1(uuid.NameSpaceOID, []byte("upgrade-crash/ΚΟΣΜΟΣ")).String()
	rec, err := events.CommandRecord(events.TypeReleaseSubmitted, &events.ClaimSubmitted{RequestID: shadowReleaseID, UserID: holder,
		Username: "ΚΟΣΜΟΣ", Canonical: u.Canonical, Key: u.Key, PolicyVersion: 2})
	if err != nil {
		t.Fatal(err)
	}
	rec.Partition = events.Partition(rec.Key, crashPartitions)
	prod, err := kgo.NewClient(append(w.opts, kgo.ProducerLinger(0))...)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if err := prod.ProduceSync(context.Background(), rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
	return w, rec
}

// waitShadowDropped waits until the follow-up of the release of rec is
// decided, then until the outbox is empty (its copies published).
func (w *upgradeWorld) waitShadowDropped(t *testing.T, rec *kgo.Record) {
	t.Helper()
	id := projection.ShadowID(shadowReleaseID, rec.Partition, "koʃrnoʃ")
	ctx := context.Background()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var n, outbox int
		if err := w.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM requests WHERE request_id = $1), (SELECT count(*) FROM outbox)`, id).Scan(&n, &outbox); err != nil {
			t.Fatal(err)
		}
		if n > 0 && outbox == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the shadow follow-up %s was not decided and published (%d ledger rows, %d outbox rows)", id, n, outbox)
		}
	}
}

// followUps returns the decisions of the shadow follow-up in the ledger.
func (w *upgradeWorld) followUps(t *testing.T, rec *kgo.Record) []string {
	t.Helper()
	id := projection.ShadowID(shadowReleaseID, rec.Partition, "koʃrnoʃ")
	rows, err := w.pool.Query(context.Background(), `SELECT decision FROM requests WHERE request_id = $1`, id)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for rows.Next() {
		var v []byte
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		var d events.Decision
		if err := json.Unmarshal(v, &d); err != nil {
			t.Fatal(err)
		}
		out = append(out, d.Outcome+" "+d.Canonical)
	}
	return out
}

// TestShadowReleaseSurvivesCrashes kills the projector process (exit 137,
// as kill -9) at each durability boundary of the release of a name with a
// shadow and of the follow-up it writes (before COMMIT, after COMMIT
// before publishing, after publishing before the outbox rows are
// deleted), then lets a healthy projector finish: the shadow is dropped
// exactly once (one ledger row, shadow_dropped, never not_held: a copy of
// the follow-up is recognised), and the projection is the one a release
// without a crash leaves, so nothing else was removed.
func TestShadowReleaseSurvivesCrashes(t *testing.T) {
	var want []string
	t.Run("without a crash", func(t *testing.T) {
		w, rec := upgradedWorld(t)
		before := w.state(t)
		stop := w.projector(t)
		w.waitShadowDropped(t, rec)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		want = w.state(t)
		gone := slices.DeleteFunc(slices.Clone(before), func(s string) bool { return slices.Contains(want, s) })
		if len(gone) != 2 || !slices.ContainsFunc(gone, func(s string) bool { return strings.HasPrefix(s, "ΚΟΣΜΟΣ κοσμοσ koʃrnoʃ ") }) {
			t.Errorf("the release removed %q; want ΚΟΣΜΟΣ's row and its shadow under koʃrnoʃ", gone)
		}
		if got := w.followUps(t, rec); !slices.Equal(got, []string{"shadow_dropped κοσμοσ"}) {
			t.Errorf("the follow-up's ledger rows: %q", got)
		}
	})
	if want == nil {
		t.FailNow()
	}
	for _, fp := range []string{projector.FailBeforeCommit, projector.FailAfterCommit, projector.FailAfterPublish} {
		for _, typ := range []string{events.TypeReleaseSubmitted, events.TypeShadowFollowing} {
			t.Run(fp+"."+typ, func(t *testing.T) {
				w, rec := upgradedWorld(t)
				w.crashDuringUpgrade(t, fp+"."+typ+":crash")
				stop := w.projector(t)
				w.waitShadowDropped(t, rec)
				if err := stop(); err != nil {
					t.Fatal(err)
				}
				if got := w.state(t); !slices.Equal(got, want) {
					t.Errorf("after a crash at %s.%s:\n got %q\nwant %q", fp, typ, got, want)
				}
				if got := w.followUps(t, rec); !slices.Equal(got, []string{"shadow_dropped κοσμοσ"}) {
					t.Errorf("the follow-up's ledger rows after a crash at %s.%s: %q, want one shadow_dropped", fp, typ, got)
				}
			})
		}
	}
}

// TestOlderBuildCannotStoreAFollowUp: a projector built before
// ShadowFollowing existed would decide one rejected/invalid ("event type
// ... want one of"), a wrong decision; the database refuses that ledger
// row (migration 005), so such a projector fails its round and retries,
// loudly, until one that knows the type decides the record. A
// ShadowFollowing this build decides invalid (a malformed one) is stored
// as any invalid record.
func TestOlderBuildCannotStoreAFollowUp(t *testing.T) {
	pool, _ := testenv.Database(t)
	ctx := context.Background()
	older := slices.DeleteFunc(slices.Clone(events.CommandTypes), func(s string) bool { return s == events.TypeShadowFollowing })
	insert := func(detail string) error {
		d := &events.Decision{RequestID: uuid.NewString(), Outcome: events.OutcomeRejected, Reason: events.ReasonInvalid, Detail: detail, PolicyVersion: 2}
		v, err := events.DecisionValue(d)
		if err != nil {
			t.Fatal(err)
		}
		_, err = pool.Exec(ctx, `INSERT INTO requests (request_id, claim_partition, claim_offset, user_id, username, outcome, reason, decision)
			VALUES ($1, 0, (SELECT count(*) FROM requests), '', '', 'rejected', 'invalid', $2)`, d.RequestID, v)
		return err
	}
	// What the older build's Parse makes of the record (DecodeCommand's
	// error, without the new type in its list).
	older1 := fmt.Sprintf("claim record could not be read: %v: event type %q, want one of %q", events.ErrNotAnEvent, events.TypeShadowFollowing, older)
	var pgErr *pgconn.PgError
	if err := insert(older1); !errors.As(err, &pgErr) || pgErr.Code != "23514" || pgErr.ConstraintName != "requests_unknown_type_needs_newer_projector" {
		t.Errorf("storing an older build's invalid decision of a ShadowFollowing: %v, want the check constraint's refusal", err)
	}
	if err := insert(`shadow follow-up id "x" is not a UUID`); err != nil {
		t.Errorf("storing this build's invalid decision of a malformed ShadowFollowing: %v", err)
	}
	if err := insert(fmt.Sprintf("claim record could not be read: %v: event type %q, want one of %q", events.ErrNotAnEvent, "SomethingElse", events.CommandTypes)); err != nil {
		t.Errorf("storing the invalid decision of a record of an unknown type: %v", err)
	}
}
