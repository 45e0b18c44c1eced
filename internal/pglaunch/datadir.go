package pglaunch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// maxSocketPath is the longest Unix socket path Linux accepts: sun_path is
// 108 bytes including the terminating NUL.
const maxSocketPath = 107

// hasCluster reports whether dir already holds an initdb'd cluster.
// PG_VERSION is the file postgres itself checks first.
func hasCluster(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "PG_VERSION"))
	return err == nil
}

// prepareDataDir creates dir if needed and hands it to the server account.
// Parents are created 0755 so the server account can traverse them.
func prepareDataDir(dir string, acct *account) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("pglaunch: creating parent of data directory: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("pglaunch: creating data directory: %w", err)
	}
	if fi, err := os.Stat(dir); err != nil {
		return fmt.Errorf("pglaunch: checking data directory: %w", err)
	} else if !fi.IsDir() {
		return fmt.Errorf("pglaunch: data directory %s is not a directory", dir)
	}
	if err := acct.checkTraversable(filepath.Dir(dir), "the data directory"); err != nil {
		return err
	}
	if hasCluster(dir) {
		return acct.chownTree(dir)
	}
	return acct.chown(dir)
}

// initCluster runs initdb on dir unless it already holds a cluster.
//
// initdb writes PG_VERSION early, so an interrupted run would later pass for
// a cluster. Because dir is known to be empty beforehand, everything in it
// after a failed run is initdb's, and we remove it.
func initCluster(ctx context.Context, cfg Config, acct *account) error {
	if hasCluster(cfg.Dir) {
		return nil
	}
	if err := checkEmpty(cfg.Dir); err != nil {
		return err
	}
	cfg.Logger.Info("initializing PostgreSQL data directory", "dir", cfg.Dir)
	err := runInitdb(ctx, cfg, acct)
	if err != nil {
		removeContents(cfg.Dir)
	}
	return err
}

// checkEmpty refuses a non-empty directory without a cluster, so we never
// run initdb on (or later clean up) files that are not ours.
func checkEmpty(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("pglaunch: reading data directory: %w", err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("pglaunch: data directory %s is not empty but holds no PostgreSQL cluster (no PG_VERSION); "+
			"empty it or choose another directory", dir)
	}
	return nil
}

func runInitdb(ctx context.Context, cfg Config, acct *account) error {
	args := []string{
		"--pgdata=" + cfg.Dir,
		"--username=postgres",
		"--auth=trust", // only reachable from 127.0.0.1 and a 0700 socket dir
		"--encoding=UTF8",
		"--locale=C", // identical sort order on every machine, and faster
	}
	if !cfg.Durable {
		args = append(args, "--no-sync")
	}
	cmd := exec.CommandContext(ctx, filepath.Join(cfg.BinDir, "initdb"), args...)
	cmd.Dir = cfg.Dir // our cwd may not be readable by the server account
	cmd.Env = childEnv()
	cmd.SysProcAttr = acct.sysProcAttr()
	// initdb runs a bootstrap postgres as its child. On cancellation,
	// SIGTERM the whole group so both stop promptly and initdb cleans up,
	// rather than SIGKILL initdb alone and leave its child writing.
	cmd.SysProcAttr.Setpgid = true
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	setParentDeathSignal(cmd.SysProcAttr)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out

	err := cmd.Run()
	if err == nil {
		return nil
	}
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // stragglers after WaitDelay
	}
	if ctx.Err() != nil {
		return fmt.Errorf("pglaunch: running initdb on %s: %w", cfg.Dir, context.Cause(ctx))
	}
	return fmt.Errorf("pglaunch: running initdb on %s: %w\n%s", cfg.Dir, err, strings.TrimSpace(out.String()))
}

// removeContents empties dir but keeps it, since it may be a mount point or
// have been created with particular ownership.
func removeContents(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}

// childEnv is our environment without PG* variables, which would otherwise
// let a developer's shell settings (PGDATA, PGPORT, PGOPTIONS, ...) change
// which cluster the binaries act on.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return env
}

// clearStalePID refuses to start if a live postgres owns dir and otherwise
// removes a postmaster.pid left by a killed run.
//
// Postgres handles a lock file whose pid is gone, but not one whose pid was
// reused by an unrelated process, which is common after a container restart
// where pids start from 1 again: it then refuses to start.
func clearStalePID(dir string, logger *slog.Logger) error {
	pidFile := filepath.Join(dir, "postmaster.pid")
	b, err := os.ReadFile(pidFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("pglaunch: reading %s: %w", pidFile, err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return nil // not ours to judge; postgres reports a corrupt file itself
	}
	if processAlive(pid) && servesDir(pid, dir) {
		return fmt.Errorf("pglaunch: data directory %s is in use by a running PostgreSQL server (pid %d); stop it first", dir, pid)
	}
	logger.Info("removing stale postmaster.pid from a previous run", "dir", dir, "pid", pid)
	if err := os.Remove(pidFile); err != nil {
		return fmt.Errorf("pglaunch: removing stale %s: %w", pidFile, err)
	}
	return nil
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// servesDir reports whether pid is a postgres process running on dataDir
// (postgres chdirs into its data directory). When it cannot tell, because
// there is no /proc or the process is not ours to inspect, it says yes, so
// we never remove a live server's lock file.
func servesDir(pid int, dataDir string) bool {
	proc := filepath.Join("/proc", strconv.Itoa(pid))
	comm, err := os.ReadFile(filepath.Join(proc, "comm"))
	if err != nil {
		return true
	}
	if name := strings.TrimSpace(string(comm)); name != "postgres" && name != "postmaster" {
		return false
	}
	cwd, err := os.Readlink(filepath.Join(proc, "cwd"))
	if err != nil {
		return true
	}
	real, err := filepath.EvalSymlinks(dataDir)
	return err != nil || cwd == real
}

// logPath is where the server's stdout and stderr go. It lives inside the
// data directory (which initdb needs empty, hence it is created afterwards)
// so that each cluster keeps its own log and tests clean it up for free.
func logPath(dir string) string {
	return filepath.Join(dir, "log", "postgres.log")
}

// openServerLog opens the server log for appending and returns its current
// size, so that errors can quote only what this run wrote.
func openServerLog(dir string, acct *account) (*os.File, int64, error) {
	path := logPath(dir)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, 0, fmt.Errorf("pglaunch: creating server log directory: %w", err)
	}
	if err := acct.chown(filepath.Dir(path)); err != nil {
		return nil, 0, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, 0, fmt.Errorf("pglaunch: opening server log: %w", err)
	}
	fi, err := f.Stat()
	if err == nil {
		err = acct.chown(path) // keep PGDATA wholly owned by the server account
	}
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("pglaunch: preparing server log %s: %w", path, err)
	}
	return f, fi.Size(), nil
}

// socketDir returns the directory for the server's Unix socket: the data
// directory when the socket path fits in sun_path, else a fresh short
// directory under /tmp (temp reports true; the caller removes it).
//
// The socket is not used by URL, but postgres always creates one, and its
// lock file also keeps two servers from sharing a port by accident.
func socketDir(dataDir string, port int, acct *account) (dir string, temp bool, err error) {
	sock := filepath.Join(dataDir, ".s.PGSQL."+strconv.Itoa(port))
	if len(sock) <= maxSocketPath {
		return dataDir, false, nil
	}
	dir, err = os.MkdirTemp("/tmp", "pgsock-")
	if err != nil {
		return "", false, fmt.Errorf("pglaunch: creating socket directory: %w", err)
	}
	if err := acct.chown(dir); err != nil {
		os.Remove(dir)
		return "", false, err
	}
	return dir, true, nil
}

// removeStaleSockets deletes socket lock files left in the data directory by
// a killed run. It must only run after clearStalePID has established that no
// server owns the directory.
func removeStaleSockets(dataDir string) {
	matches, _ := filepath.Glob(filepath.Join(dataDir, ".s.PGSQL.*"))
	for _, m := range matches {
		os.Remove(m)
	}
}
