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
