package projector

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/internal/testenv"
	"github.com/usernameregistry/registry/projector/migrations"
)

// TestPolicyVersionRecorded: a new database records the latest policy
// version on first use and keeps it; a database that held data when
// migration 002 ran was made under version 1 and stays there; a projector
// told to decide under another version than the recorded one refuses to
// start, and one told nothing decides under the recorded one.
func TestPolicyVersionRecorded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fresh, _ := testenv.Database(t)
	for range 2 {
		if v, err := PolicyVersion(ctx, fresh); err != nil || v != username.Latest {
			t.Fatalf("new database: version %d, %v; want %d", v, err, username.Latest)
		}
	}

	old, _ := testenv.Database(t)
	// Undo migration 002 on a database that holds version-1 data, and run
	// it again, as on a registry upgraded to this build.
	for _, q := range []string{
		`DROP TABLE username_policy`,
		`DELETE FROM schema_migrations WHERE version = 2`,
		`INSERT INTO topic_layout (topic, partitions) VALUES ('claims', 12)`,
	} {
		if _, err := old.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := migrations.Migrate(ctx, old, slog.Default()); err != nil {
		t.Fatal(err)
	}
	if v, err := PolicyVersion(ctx, old); err != nil || v != 1 {
		t.Fatalf("database with version-1 data: version %d, %v; want 1", v, err)
	}
	for _, c := range []struct {
		configured, want int
		err              error
	}{{0, 1, nil}, {1, 1, nil}, {2, 0, ErrPolicyVersion}} {
		p, err := New(Config{Kafka: []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}, Partitions: 12, PolicyVersion: c.configured}, old)
		if err != nil {
			t.Fatal(err)
		}
		got, err := p.recordedPolicy(ctx)
		switch {
		case c.err != nil && !errors.Is(err, c.err):
			t.Fatalf("configured %d on a version-1 database: %v; want %v", c.configured, err, c.err)
		case c.err == nil && (err != nil || got.Version() != c.want):
			t.Fatalf("configured %d on a version-1 database: %v, %v; want version %d", c.configured, got, err, c.want)
		}
	}
}

// TestRequirePolicyVersionAfterUpgrade: --policy-version names what a NEW
// database starts under. A database created under version 1 and upgraded
// to 2 accepts a restart still configured with 1 (the processes then run
// under 2, read from the database), while a database created under 2
// refuses 1, and no database accepts a version above the one it decides
// under.
func TestRequirePolicyVersionAfterUpgrade(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	upgraded, _ := testenv.Database(t)
	if err := RequirePolicyVersion(ctx, upgraded, 1); err != nil {
		t.Fatalf("new database under version 1: %v", err)
	}
	if _, err := upgraded.Exec(ctx, `UPDATE username_policy SET initial_version = coalesce(initial_version, version), version = 2`); err != nil { // what registry policy upgrade records: first, last
		t.Fatal(err)
	}
	if err := RequirePolicyVersion(ctx, upgraded, 1); err != nil {
		t.Errorf("restart with version 1 of a database created under 1 and upgraded to 2: %v", err)
	}
	if v, err := PolicyVersion(ctx, upgraded); err != nil || v != 2 {
		t.Errorf("the upgraded database decides under %d (%v), want 2", v, err)
	}
	born2, _ := testenv.Database(t)
	if err := RequirePolicyVersion(ctx, born2, 2); err != nil {
		t.Fatalf("new database under version 2: %v", err)
	}
	if err := RequirePolicyVersion(ctx, born2, 1); !errors.Is(err, ErrPolicyVersion) {
		t.Errorf("version 1 for a database created under 2: %v, want ErrPolicyVersion", err)
	}
	if _, err := upgraded.Exec(ctx, `UPDATE username_policy SET version = 1`); err != nil {
		t.Fatal(err)
	}
	if err := RequirePolicyVersion(ctx, upgraded, 2); !errors.Is(err, ErrPolicyVersion) {
		t.Errorf("version 2 for a database deciding under 1: %v, want ErrPolicyVersion", err)
	}
}
