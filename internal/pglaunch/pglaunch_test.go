package pglaunch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// binDir returns the server binaries as `registry dev` would find them
// (the machine's, or the pinned build), skipping the test when there are
// none, except under CI where a missing binary is a broken environment.
func binDir(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	dir, err := testBinaries(t).Dir(ctx)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and no PostgreSQL server binaries: %v", err)
		}
		t.Skipf("skipping: no PostgreSQL server binaries: %v", err)
	}
	return dir
}

// baseDir returns a directory removed after the test. t.TempDir is 0700,
// which the postgres account cannot traverse when we are root, so create
// our own world-searchable one instead.
func baseDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pglaunch-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// start starts a cluster and stops it when the test ends.
func start(t *testing.T, cfg Config) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	began := time.Now()
	c, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("started on port %d in %s", c.Port(), time.Since(began).Round(time.Millisecond))
	t.Cleanup(func() { c.Stop() })
	return c
}

func connect(t *testing.T, c *Cluster) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), c.URL("postgres"))
	if err != nil {
		t.Fatalf("connecting to %s: %v", c.URL("postgres"), err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func queryString(t *testing.T, conn *pgx.Conn, sql string) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(t.Context(), sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func stop(t *testing.T, c *Cluster) {
	t.Helper()
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	select {
	case <-c.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

func TestDurableRestartKeepsData(t *testing.T) {
	t.Parallel()
	cfg := Config{Dir: filepath.Join(baseDir(t), "data"), Durable: true, BinDir: binDir(t), Logger: testLogger(t)}

	c := start(t, cfg)
	conn := connect(t, c)
	if got := queryString(t, conn, "SELECT 1::text"); got != "1" {
		t.Fatalf("SELECT 1 = %q", got)
	}
	if got := queryString(t, conn, "SHOW fsync"); got != "on" {
		t.Fatalf("durable cluster has fsync=%s", got)
	}
	for _, sql := range []string{"CREATE TABLE kept (v text)", "INSERT INTO kept VALUES ('hello')"} {
		if _, err := conn.Exec(t.Context(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	conn.Close(t.Context())
	stop(t, c)

	c = start(t, cfg)
	if got := queryString(t, connect(t, c), "SELECT v FROM kept"); got != "hello" {
		t.Fatalf("after restart: got %q, want hello", got)
	}
	stop(t, c)
}

func TestNonDurable(t *testing.T) {
	t.Parallel()
	c := start(t, Config{Dir: filepath.Join(baseDir(t), "data"), BinDir: binDir(t), Logger: testLogger(t)})
	conn := connect(t, c)
	for setting, want := range map[string]string{
		"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
		"max_connections": "200", "listen_addresses": "127.0.0.1",
	} {
		if got := queryString(t, conn, "SHOW "+setting); got != want {
			t.Errorf("%s = %q, want %q", setting, got, want)
		}
	}
	if got := queryString(t, conn, "SHOW server_encoding"); got != "UTF8" {
		t.Errorf("server_encoding = %q", got)
	}
}

func TestFixedPort(t *testing.T) {
	t.Parallel()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	c := start(t, Config{Dir: filepath.Join(baseDir(t), "data"), Port: port, BinDir: binDir(t), Logger: testLogger(t)})
	if c.Port() != port {
		t.Fatalf("Port() = %d, want %d", c.Port(), port)
	}
	want := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/app?sslmode=disable", port)
	if got := c.URL("app"); got != want {
		t.Fatalf("URL = %q, want %q", got, want)
	}
}

func TestSecondStartOnLiveDirFails(t *testing.T) {
	t.Parallel()
	cfg := Config{Dir: filepath.Join(baseDir(t), "data"), BinDir: binDir(t), Logger: testLogger(t)}
	start(t, cfg)
	c, err := Start(t.Context(), cfg)
	if err == nil {
		c.Stop()
		t.Fatal("second Start on a live data directory succeeded")
	}
	if !strings.Contains(err.Error(), "in use by a running PostgreSQL server") {
		t.Fatalf("unexpected error: %v", err)
	}
}

// A postmaster.pid naming a live process that is not this directory's
// server is what a container restart leaves behind (pids start from 1
// again); postgres alone would refuse to start.
func TestStalePIDFileWithReusedPID(t *testing.T) {
	t.Parallel()
	cfg := Config{Dir: filepath.Join(baseDir(t), "data"), BinDir: binDir(t), Logger: testLogger(t)}
	stop(t, start(t, cfg))
	other := start(t, Config{Dir: filepath.Join(baseDir(t), "other"), BinDir: binDir(t), Logger: testLogger(t)})

	for name, pid := range map[string]int{"not postgres": os.Getpid(), "another cluster's postgres": other.pid} {
		stale := fmt.Sprintf("%d\n%s\n", pid, cfg.Dir)
		if err := os.WriteFile(filepath.Join(cfg.Dir, "postmaster.pid"), []byte(stale), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Start(t.Context(), cfg)
		if err != nil {
			t.Fatalf("pid of %s: %v", name, err)
		}
		stop(t, c)
	}
}

func TestDoneClosesOnCrash(t *testing.T) {
	t.Parallel()
	c := start(t, Config{Dir: filepath.Join(baseDir(t), "data"), BinDir: binDir(t), Logger: testLogger(t)})
	if err := syscall.Kill(-c.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed after the server was killed")
	}
	if err := c.Stop(); err == nil {
		t.Fatal("Stop after a crash returned nil")
	}
}

// A data directory whose socket path would exceed sun_path must still work.
func TestLongDirUsesShortSocketDir(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(baseDir(t), strings.Repeat("d", 60), strings.Repeat("e", 60), "data")
	c := start(t, Config{Dir: dir, BinDir: binDir(t), Logger: testLogger(t)})
	if !c.tempSocket || !strings.HasPrefix(c.socketDir, "/tmp/") {
		t.Fatalf("socket dir %q for data dir of length %d", c.socketDir, len(dir))
	}
	if _, err := os.Stat(filepath.Join(c.socketDir, ".s.PGSQL."+strconv.Itoa(c.Port()))); err != nil {
		t.Fatalf("socket: %v", err)
	}
	connect(t, c)
	stop(t, c)
	if _, err := os.Stat(c.socketDir); !os.IsNotExist(err) {
		t.Fatalf("socket dir %s not removed: %v", c.socketDir, err)
	}
}

func TestRootNeedsTraversableParents(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("only root switches to the postgres account")
	}
	private := filepath.Join(baseDir(t), "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := Start(t.Context(), Config{Dir: filepath.Join(private, "data"), BinDir: binDir(t), Logger: testLogger(t)})
	if err == nil || !strings.Contains(err.Error(), "cannot traverse "+private) {
		t.Fatalf("want a traversal error naming %s, got %v", private, err)
	}
}

func TestStartupFailureQuotesLog(t *testing.T) {
	t.Parallel()
	cfg := Config{Dir: filepath.Join(baseDir(t), "data"), BinDir: binDir(t), Logger: testLogger(t)}
	stop(t, start(t, cfg))
	// Corrupt the config so the server exits at startup.
	conf := filepath.Join(cfg.Dir, "postgresql.conf")
	f, err := os.OpenFile(conf, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, "no_such_setting = 1")
	f.Close()
	_, err = Start(t.Context(), cfg)
	if err == nil || !strings.Contains(err.Error(), "no_such_setting") || !strings.Contains(err.Error(), "postgres.log") {
		t.Fatalf("want an error quoting the server log, got %v", err)
	}
	t.Logf("startup error as reported:\n%v", err)
}

func TestDirVersion(t *testing.T) {
	for dir, want := range map[string]string{
		"/usr/lib/postgresql/15/bin":  "[15]",
		"/usr/lib/postgresql/9.6/bin": "[9 6]",
		"/usr/pgsql-16/bin":           "[16]",
	} {
		if got := fmt.Sprint(dirVersion(dir)); got != want {
			t.Errorf("dirVersion(%s) = %s, want %s", dir, got, want)
		}
	}
}

// TestServerDiesWithParent kills a process that started a cluster and
// checks that the server goes away too, rather than holding the data
// directory for the next run. The test binary re-runs itself as that
// process.
func TestServerDiesWithParent(t *testing.T) {
	if dir := os.Getenv("PGLAUNCH_HELPER_DIR"); dir != "" {
		runHelper(dir, os.Getenv("PGLAUNCH_HELPER_BIN"))
		return
	}
	if runtime.GOOS != "linux" {
		t.Skip("parent-death signal is Linux-only")
	}
	t.Parallel()
	dir := filepath.Join(baseDir(t), "data")
	bin := binDir(t)

	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestServerDiesWithParent$")
	cmd.Env = append(os.Environ(), "PGLAUNCH_HELPER_DIR="+dir, "PGLAUNCH_HELPER_BIN="+bin)
	cmd.Stderr = t.Output()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmt.Fscan(out, &pid); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("reading server pid from helper: %v", err)
	}
	cmd.Process.Kill()
	cmd.Wait()

	deadline := time.Now().Add(30 * time.Second)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(-pid, syscall.SIGKILL)
			t.Fatalf("server pid %d still running 30s after its parent was killed", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runHelper starts a cluster, reports the server pid and waits to be killed.
func runHelper(dir, bin string) {
	c, err := Start(context.Background(), Config{Dir: dir, BinDir: bin})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(c.pid)
	<-c.Done()
	os.Exit(1)
}

// Cancelling Start during initdb must not leave a half-made cluster that a
// later Start would mistake for a real one.
func TestCancelDuringInitdb(t *testing.T) {
	t.Parallel()
	cfg := Config{Dir: filepath.Join(baseDir(t), "data"), BinDir: binDir(t), Logger: testLogger(t)}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if c, err := Start(ctx, cfg); err == nil {
		c.Stop() // initdb was faster than the timeout; nothing to check
	} else if hasCluster(cfg.Dir) {
		t.Fatalf("cancelled Start (%v) left PG_VERSION behind", err)
	} else {
		t.Logf("cancelled Start: %v", err)
	}
	connect(t, start(t, cfg))
}

// Start must neither initdb over nor delete files that are not a cluster.
func TestNonEmptyDirWithoutClusterIsRefused(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(baseDir(t), "data")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	precious := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(precious, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Start(t.Context(), Config{Dir: dir, BinDir: binDir(t), Logger: testLogger(t)})
	if err == nil || !strings.Contains(err.Error(), "not empty but holds no PostgreSQL cluster") {
		t.Fatalf("want a not-empty error, got %v", err)
	}
	if _, err := os.Stat(precious); err != nil {
		t.Fatalf("existing file was touched: %v", err)
	}
}

func TestFixedPortInUse(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	_, err = Start(t.Context(), Config{Dir: filepath.Join(baseDir(t), "data"), Port: port, BinDir: binDir(t), Logger: testLogger(t)})
	if !errors.Is(err, errPortInUse) {
		t.Fatalf("want errPortInUse, got %v", err)
	}
}

// Not parallel: it changes PATH and binGlobs, which parallel tests read
// only after the sequential tests have finished.
func TestFindBinDirMissingSaysWhatToDo(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	saved := binGlobs
	binGlobs = []string{filepath.Join(t.TempDir(), "*", "bin")}
	defer func() { binGlobs = saved }()

	_, err := FindBinDir()
	if err == nil || !strings.Contains(err.Error(), "apt-get install postgresql") || !strings.Contains(err.Error(), "DATABASE_URL") {
		t.Fatalf("want install/DATABASE_URL advice, got %v", err)
	}
}
