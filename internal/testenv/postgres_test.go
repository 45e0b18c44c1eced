package testenv

import (
	"os"
	"strings"
	"testing"

	"github.com/usernameregistry/registry/internal/pglaunch"
)

// With REGISTRY_POSTGRES=download (as CI sets it), the test database runs
// on the pinned build even on a machine that has PostgreSQL installed.
func TestDatabaseRunsOnSelectedBinaries(t *testing.T) {
	t.Parallel()
	pool, _ := Database(t)
	var version string
	if err := pool.QueryRow(t.Context(), "SHOW server_version").Scan(&version); err != nil {
		t.Fatal(err)
	}
	t.Logf("server_version %s", version)
	_, c := selected()
	if c.Postgres == sourceLocal && os.Getenv("REGISTRY_POSTGRES") == "download" &&
		!strings.HasPrefix(pglaunch.PinnedVersion(), version+".") {
		t.Fatalf("REGISTRY_POSTGRES=download but server_version is %s, not the pinned %s", version, pglaunch.PinnedVersion())
	}
}

// Not parallel: it sets REGISTRY_POSTGRES.
func TestBinariesRefusesUnknownSource(t *testing.T) {
	t.Setenv("REGISTRY_POSTGRES", "docker")
	if _, err := binaries(); err == nil || !strings.Contains(err.Error(), "REGISTRY_POSTGRES") {
		t.Fatalf("want an error naming REGISTRY_POSTGRES, got %v", err)
	}
}
