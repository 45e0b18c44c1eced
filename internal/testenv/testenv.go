package testenv

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/testcontainers/testcontainers-go"

	"github.com/usernameregistry/registry/internal/pg"
	"go.uber.org/goleak"

	"github.com/usernameregistry/registry/internal/pglaunch"
	"github.com/usernameregistry/registry/projector/migrations"
)

// Main wraps a package's TestMain: it runs the tests, then stops the
// private PostgreSQL cluster and terminates the containers, whichever were
// started, and then fails the run if any goroutine a test started is still
// running (go.uber.org/goleak): every projector, reader, server and client
// a test starts must be stopped by the time it ends.
func Main(m *testing.M) {
	code := m.Run()
	shared.stop()
	sharedKafka.stop()
	if code == 0 {
		if err := goleak.Find(LeakOptions()...); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: goroutines left running after the tests: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// LeakOptions are the goroutines goleak may find still running after a
// package's tests, for packages that call goleak themselves: none but
// the runtime's own.
func LeakOptions() []goleak.Option {
	return nil
}

// T is the part of testing.TB the helpers use, so that an Example (which
// has no *testing.T) can use them through Background.
type T interface {
	Helper()
	Cleanup(func())
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	Log(args ...any)
}

// Background is a T for code that runs outside a test, such as a runnable
// Example: a failure panics, and Close runs the cleanups.
type Background struct{ cleanups []func() }

func (*Background) Helper()                      {}
func (b *Background) Cleanup(f func())           { b.cleanups = append(b.cleanups, f) }
func (*Background) Fatalf(f string, args ...any) { panic(fmt.Sprintf(f, args...)) }
func (*Background) Skipf(f string, args ...any)  { panic(fmt.Sprintf(f, args...)) }
func (*Background) Log(...any)                   {}

// Close runs the cleanups, last registered first.
func (b *Background) Close() {
	for i := len(b.cleanups) - 1; i >= 0; i-- {
		b.cleanups[i]()
	}
}

// unavailable fails the test under CI=true and skips it otherwise.
func unavailable(t T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and a test dependency is missing: "+format, args...)
	}
	t.Skipf("test dependency missing: "+format, args...)
}

type server struct {
	once sync.Once
	url  string // base URL; the database name is replaced per test
	err  error
	// misconfigured marks an err that a variable's value caused: a
	// mistake to fix, so it fails the test even outside CI.
	misconfigured bool
	cluster       *pglaunch.Cluster
	dir           string
	container     testcontainers.Container // under REGISTRY_TEST_DOCKER=1
}

var (
	shared server
	dbSeq  atomic.Int64
)

func (s *server) start() {
	env, c := selected()
	switch c.Postgres {
	case sourceEnv:
		s.url = env.DatabaseURL
		return
	case sourceDocker:
		s.container, s.url, s.err = startPostgres()
		return
	}
	s.dir, s.err = os.MkdirTemp("", "registry-test-pg-")
	if s.err != nil {
		return
	}
	// Searchable by others: as root, the server runs as the postgres user.
	if s.err = os.Chmod(s.dir, 0o755); s.err != nil {
		return
	}
	bins, err := binaries()
	if err != nil {
		s.err, s.misconfigured = err, true
		return
	}
	// A first download of the pinned build can take minutes on a slow line.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	binDir, err := bins.Dir(ctx)
	if err != nil {
		s.err = fmt.Errorf("%w (for the tests, TEST_DATABASE_URL names an existing server)", err)
		return
	}
	ctx, cancel = context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s.cluster, s.err = pglaunch.Start(ctx, pglaunch.Config{Dir: filepath.Join(s.dir, "data"), BinDir: binDir})
	if s.err == nil {
		s.url = s.cluster.URL("postgres")
	}
}

// binaries is where the private cluster's server binaries come from: the
// variables `registry dev` reads (REGISTRY_POSTGRES, REGISTRY_POSTGRES_MIRROR,
// REGISTRY_POSTGRES_CACHE), so the tests find or download them the same way.
func binaries() (pglaunch.Binaries, error) {
	src, err := pglaunch.ParseSource(os.Getenv("REGISTRY_POSTGRES"))
	if err != nil {
		return pglaunch.Binaries{}, fmt.Errorf("REGISTRY_POSTGRES: %w", err)
	}
	return pglaunch.Binaries{
		Source:   src,
		Mirror:   os.Getenv("REGISTRY_POSTGRES_MIRROR"),
		CacheDir: os.Getenv("REGISTRY_POSTGRES_CACHE"),
	}, nil
}

func (s *server) stop() {
	if s.container != nil {
		testcontainers.TerminateContainer(s.container) //nolint:errcheck // best effort at exit; Ryuk reaps it otherwise
	}
	if s.cluster != nil {
		s.cluster.Stop() //nolint:errcheck // best effort at exit
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

// Database creates a fresh, migrated database for t, dropped when t ends,
// and returns a pool on it and its URL.
func Database(t T) (*pgxpool.Pool, string) {
	t.Helper()
	shared.once.Do(shared.start)
	if shared.misconfigured {
		t.Fatalf("PostgreSQL: %v", shared.err)
	}
	if shared.err != nil {
		unavailable(t, "PostgreSQL: %v", shared.err)
	}
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, shared.url)
	if err != nil {
		_, c := selected()
		unavailable(t, "%s: %v", describePostgres(c.Postgres), err)
	}
	defer admin.Close(ctx)
	name := fmt.Sprintf("registry_test_%d_%d", os.Getpid(), dbSeq.Add(1))
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("creating test database: %v", err)
	}
	url := withDatabase(t, shared.url, name)
	pool, err := pg.Connect(ctx, url, 20)
	if err != nil {
		t.Fatalf("connecting to test database: %v", err)
	}
	t.Cleanup(func() { dropDatabase(pool, name) })
	if _, err := migrations.Migrate(ctx, pool, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("migrating test database: %v", err)
	}
	return pool, url
}

func dropDatabase(pool *pgxpool.Pool, name string) {
	pool.Close()
	ctx := context.Background()
	if admin, err := pgx.Connect(ctx, shared.url); err == nil {
		admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)") //nolint:errcheck // best effort
		admin.Close(ctx)
	}
}

// withDatabase points a connection string (URL or key=value form) at
// another database.
func withDatabase(t T, conn, name string) string {
	u, err := url.Parse(conn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return conn + " dbname=" + name
	}
	u.Path = "/" + name
	return u.String()
}
