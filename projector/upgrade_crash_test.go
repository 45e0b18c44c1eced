package projector_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/kafka"
	"github.com/usernameregistry/registry/internal/testenv"
	"github.com/usernameregistry/registry/projector"
	"github.com/usernameregistry/registry/projector/upgrade"
)

// upgradeKeyFile signs the upgrade's records in the crash tests, and the
// helper projector verifies them with it.
var upgradeKeyFile = "test " + strings.Repeat("7c", 32)

var upgradeKeys, _ = events.ParseAdminKeys(strings.NewReader(upgradeKeyFile))

// upgradeNames fill the version-1 registry of the crash tests: two pairs
// version 2 puts under one key, and names that move partitions alone.
var upgradeNames = []string{"dog", "d0g", "κοσμος", "ΚΟΣΜΟΣ", "name10", "bob0", "x0y0", "alice"}

type upgradeWorld struct {
	*crashWorld
	opts []kgo.Opt
}

// newUpgradeWorld is a registry started under version 1 whose names a
// healthy projector has decided; no projector runs when it returns.
func newUpgradeWorld(t *testing.T) *upgradeWorld {
	t.Helper()
	brokers, prod := testenv.Topics(t, crashPartitions)
	pool, url := testenv.Database(t)
	ctx := context.Background()
	if err := projector.RequirePolicyVersion(ctx, pool, 1); err != nil {
		t.Fatal(err)
	}
	w := &upgradeWorld{crashWorld: &crashWorld{brokers: brokers, pool: pool, url: url}, opts: kafka.ClientOptions(brokers, testenv.Logger(t))}
	var recs []*kgo.Record
	for _, name := range upgradeNames {
		u, err := username.MustVersion(1).Normalize(name)
		if err != nil {
			t.Fatal(err)
		}
		id := uuid.NewSHA1(uuid.NameSpaceOID, []byte("upgrade-crash/"+name)).String()
		rec, err := events.ClaimRecord(&events.ClaimSubmitted{RequestID: id, UserID: id, Username: name, Canonical: u.Canonical, Key: u.Key, PolicyVersion: 1})
		if err != nil {
			t.Fatal(err)
		}
		rec.Partition = events.Partition(rec.Key, crashPartitions)
		recs = append(recs, rec)
	}
	if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	stop := w.projector(t)
	w.settle(t)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	return w
}

// projector starts a healthy projector with the upgrade's key.
func (w *upgradeWorld) projector(t *testing.T) (stop func() error) {
	t.Helper()
	log := testenv.Logger(t)
	p, err := projector.New(projector.Config{Kafka: w.opts, Partitions: crashPartitions, SessionTimeout: 6 * time.Second,
		RetryBackoff: 20 * time.Millisecond, AdminKeys: upgradeKeys, Logger: log, Group: "upgrade-crash"}, w.pool)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() { ch <- p.Run(ctx) }()
	return func() error { cancel(); return <-ch }
}

// upgrade starts registry policy upgrade --to 2 in the background.
func (w *upgradeWorld) upgrade(t *testing.T) <-chan error {
	t.Helper()
	prod, err := kgo.NewClient(append(w.opts, kgo.ProducerLinger(0))...)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		defer prod.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_, err := upgrade.Run(ctx, upgrade.Config{Pool: w.pool, Producer: prod, Partitions: crashPartitions, To: 2, AdminKeys: upgradeKeys, Poll: 20 * time.Millisecond})
		done <- err
	}()
	return done
}

// crashDuringUpgrade runs the helper projector (the test binary itself)
// with spec until its failpoint kills it (exit 137).
func (w *upgradeWorld) crashDuringUpgrade(t *testing.T, spec string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PROJECTOR_TEST_FAILPOINTS="+spec, "PROJECTOR_TEST_BROKERS="+strings.Join(w.brokers, ","),
		"PROJECTOR_TEST_DATABASE="+w.url, fmt.Sprintf("PROJECTOR_TEST_PARTITIONS=%d", crashPartitions), "PROJECTOR_TEST_ADMIN_KEYS="+upgradeKeyFile)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 137 {
		t.Fatalf("helper projector with %s: %v, want exit status 137\n%s", spec, err, out)
	}
}

// state is the projection after the upgrade, without offsets (a crash
// writes copies, which move later records).
func (w *upgradeWorld) state(t *testing.T) []string {
	t.Helper()
	rows, err := w.pool.Query(context.Background(), `
SELECT format('%s %s %s %s granted=%s grandfathered=%s invalid=%s version=%s', username, canonical, key, user_id, granted_under, grandfathered, invalid, policy_version) FROM usernames
UNION ALL SELECT format('partition %s version=%s frozen=%s staged=%s', partition, policy_version, frozen_to, staged) FROM claim_partitions
UNION ALL SELECT format('policy %s upgrading=%s', version, upgrading_to) FROM username_policy
UNION ALL SELECT format('carried %s, locks %s', (SELECT count(*) FROM carried), (SELECT count(*) FROM rename_locks))`)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// TestUpgradeSurvivesProjectorCrashes kills the projector process (exit
// 137, as kill -9) in the middle of a policy upgrade, at each durability
// boundary of each of the upgrade's records (freeze, carry, activation),
// then lets a healthy projector finish: the upgrade ends, and the
// projection is the one an upgrade without a crash leaves.
//
// Each world is made in a subtest of its own, one after another: on a
// shared broker (Apache Kafka, TEST_KAFKA_BROKERS) a world holds the
// broker until its test ends, so a world held by this test itself would
// make every later one wait for ever.
func TestUpgradeSurvivesProjectorCrashes(t *testing.T) {
	var want []string
	t.Run("without a crash", func(t *testing.T) {
		clean := newUpgradeWorld(t)
		stop := clean.projector(t)
		if err := <-clean.upgrade(t); err != nil {
			t.Fatal(err)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		want = clean.state(t)
	})
	if want == nil {
		t.FailNow()
	}
	for _, fp := range []string{projector.FailBeforeCommit, projector.FailAfterCommit, projector.FailAfterPublish} {
		for _, typ := range []string{events.TypePolicyFreezing, events.TypeHolderCarried, events.TypePolicyActivating} {
			t.Run(fp+"."+typ, func(t *testing.T) {
				w := newUpgradeWorld(t)
				done := w.upgrade(t)
				w.crashDuringUpgrade(t, fp+"."+typ+":crash")
				stop := w.projector(t)
				defer stop()
				if err := <-done; err != nil {
					t.Fatalf("upgrade after the crash: %v", err)
				}
				if got := w.state(t); !slices.Equal(got, want) {
					t.Errorf("after a crash at %s.%s:\n got %q\nwant %q", fp, typ, got, want)
				}
			})
		}
	}
}
