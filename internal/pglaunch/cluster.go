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
	"strconv"
	"sync"
	"syscall"
	"time"
)

const (
	// readyTimeout bounds how long Start waits for the server to accept
	// connections; crash recovery of a large dev cluster can take a while.
	readyTimeout = 60 * time.Second
	// stopTimeout is how long a fast shutdown may take before Stop escalates
	// to an immediate shutdown.
	stopTimeout = 30 * time.Second
	// quitTimeout is how long an immediate shutdown may take before Stop
	// kills the whole process group.
	quitTimeout = 10 * time.Second
	// portAttempts is how often Start picks a new free port when another
	// process grabbed the one it picked before postgres could bind it.
	portAttempts = 3
)

// Config configures a private cluster.
type Config struct {
	// Dir is the data directory (PGDATA). It is created and initdb'd if
	// missing or empty, and reused if it already holds a cluster. Required.
	Dir string
	// Port is the TCP port on 127.0.0.1 to listen on; 0 (the default) picks
	// a free one.
	Port int
	// Durable keeps PostgreSQL's crash-safety settings. When false, as
	// suits tests, the server runs with fsync, synchronous_commit and
	// full_page_writes off for speed, and data may be lost on a crash.
	Durable bool
	// Logger receives lifecycle messages; it defaults to slog.Default().
	// The server's own output goes to Dir/log/postgres.log, not here.
	Logger *slog.Logger
	// BinDir is the directory holding initdb and postgres. Empty means
	// the directory Binaries gives.
	BinDir string
	// Binaries says where the server binaries come from when BinDir is
	// empty: the machine's, or the pinned build downloaded into a cache.
	// Its zero value takes the machine's when there are any.
	Binaries Binaries
}

// withDefaults validates cfg and fills in defaults. Dir is made absolute
// because the server runs with a different working directory.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Dir == "" {
		return cfg, errors.New("pglaunch: Config.Dir is required")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return cfg, fmt.Errorf("pglaunch: resolving data directory: %w", err)
	}
	cfg.Dir = dir
	if cfg.Port < 0 || cfg.Port > 65535 {
		return cfg, fmt.Errorf("pglaunch: invalid port %d", cfg.Port)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Binaries.Logger == nil {
		cfg.Binaries.Logger = cfg.Logger
	}
	return cfg, nil
}

// Cluster is a running PostgreSQL server started by Start. Its methods are
// safe for concurrent use.
type Cluster struct {
	dir        string
	port       int
	pid        int
	socketDir  string
	tempSocket bool // socketDir is ours to remove
	logPath    string
	logOffset  int64 // size of the log before this run, for error excerpts
	logger     *slog.Logger

	done    chan struct{}
	exitErr error // set before done is closed

	stopOnce sync.Once
	stopErr  error
}

// Start starts a private PostgreSQL server on cfg.Dir, running initdb first
// if the directory holds no cluster, and returns once the server accepts
// connections. ctx bounds the startup only (a download of the server
// binaries included); the server keeps running until Stop is called or the
// calling process exits.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	acct, err := serverAccount()
	if err != nil {
		return nil, err
	}
	if cfg.BinDir == "" {
		if cfg.BinDir, err = cfg.Binaries.Dir(ctx); err != nil {
			return nil, err
		}
	}
	if err := acct.checkTraversable(cfg.BinDir, "the server binaries"); err != nil {
		return nil, err
	}
	if err := prepareDataDir(cfg.Dir, acct); err != nil {
		return nil, err
	}
	if err := initCluster(ctx, cfg, acct); err != nil {
		return nil, err
	}
	if err := clearStalePID(cfg.Dir, cfg.Logger); err != nil {
		return nil, err
	}
	removeStaleSockets(cfg.Dir)
	return startOnFreePort(ctx, cfg, acct)
}

// startOnFreePort launches the server, retrying with a new port when the
// port was picked by us and lost to another process in the meantime.
func startOnFreePort(ctx context.Context, cfg Config, acct *account) (*Cluster, error) {
	for attempt := 1; ; attempt++ {
		port := cfg.Port
		if port == 0 {
			var err error
			if port, err = freePort(); err != nil {
				return nil, err
			}
		}
		c, err := launch(ctx, cfg, acct, port)
		if err == nil || cfg.Port != 0 || attempt == portAttempts || !errors.Is(err, errPortInUse) {
			return c, err
		}
		cfg.Logger.Debug("picked port was taken; retrying", "port", port)
	}
}

// freePort asks the kernel for an unused port. Another process can take it
// before postgres binds it, which startOnFreePort handles.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pglaunch: picking a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// launch starts the postgres process on port and waits until it is ready.
func launch(ctx context.Context, cfg Config, acct *account, port int) (*Cluster, error) {
	sockDir, tempSocket, err := socketDir(cfg.Dir, port, acct)
	if err != nil {
		return nil, err
	}
	logFile, logOffset, err := openServerLog(cfg.Dir, acct)
	if err != nil {
		removeTempSocketDir(sockDir, tempSocket)
		return nil, err
	}
	defer logFile.Close() // the child holds its own copy of the descriptor

	cmd := serverCommand(cfg, acct, port, sockDir)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		removeTempSocketDir(sockDir, tempSocket)
		return nil, fmt.Errorf("pglaunch: starting postgres: %w", err)
	}
	c := &Cluster{
		dir:        cfg.Dir,
		port:       port,
		pid:        cmd.Process.Pid,
		socketDir:  sockDir,
		tempSocket: tempSocket,
		logPath:    logFile.Name(),
		logOffset:  logOffset,
		logger:     cfg.Logger,
		done:       make(chan struct{}),
	}
	go c.reap(cmd)
	if err := c.waitReady(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	c.logger.Info("PostgreSQL started", "dir", c.dir, "port", port, "pid", c.pid, "log", c.logPath)
	return c, nil
}

// serverCommand builds the postgres command line. Settings are passed with
// -c rather than written to postgresql.conf so that a reused data directory
// always runs with the settings of the current caller.
func serverCommand(cfg Config, acct *account, port int, sockDir string) *exec.Cmd {
	args := []string{
		"-D", cfg.Dir,
		"-p", strconv.Itoa(port),
		"-h", "127.0.0.1", // never reachable from other machines: auth is trust
		"-k", sockDir,
		"-c", "logging_collector=off", // we capture stderr ourselves
		"-c", "max_connections=200",
		"-c", "shared_buffers=128MB",
	}
	if !cfg.Durable {
		args = append(args,
			"-c", "fsync=off",
			"-c", "synchronous_commit=off",
			"-c", "full_page_writes=off",
		)
	}
	cmd := exec.Command(filepath.Join(cfg.BinDir, "postgres"), args...)
	cmd.Dir = cfg.Dir
	cmd.Env = childEnv()
	cmd.SysProcAttr = acct.sysProcAttr()
	// Own process group: a terminal Ctrl-C goes to the foreground group,
	// and we want to stop our work before the database, not race it.
	cmd.SysProcAttr.Setpgid = true
	setParentDeathSignal(cmd.SysProcAttr)
	return cmd
}

// reap waits for the server process and records how it exited.
func (c *Cluster) reap(cmd *exec.Cmd) {
	c.exitErr = cmd.Wait()
	close(c.done)
}

// Port returns the TCP port the server listens on at 127.0.0.1.
func (c *Cluster) Port() int { return c.port }

// URL returns a connection URL for database as the superuser "postgres".
// TLS is disabled because the server only listens on loopback.
func (c *Cluster) URL(database string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, database)
}

// Done returns a channel that is closed when the server process exits,
// whether through Stop or unexpectedly, so callers can notice a crash.
func (c *Cluster) Done() <-chan struct{} { return c.done }

// Stop shuts the server down and waits for it to exit. It asks for a fast
// shutdown (roll back open transactions, checkpoint, exit); if that takes
// longer than 30s it escalates to an immediate shutdown, which is safe but
// makes the next start run crash recovery.
//
// Stop returns nil if the server exited cleanly. It is idempotent: later
// calls wait for the first and return its result.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		c.stopErr = c.stop()
		removeTempSocketDir(c.socketDir, c.tempSocket)
	})
	return c.stopErr
}

func (c *Cluster) stop() error {
	select {
	case <-c.done:
		return c.exitError("PostgreSQL had already exited")
	default:
	}
	c.signal(syscall.SIGINT)
	if c.waitExit(stopTimeout) {
		c.logger.Info("PostgreSQL stopped", "dir", c.dir, "port", c.port)
		return c.exitError("PostgreSQL failed during shutdown")
	}
	c.logger.Warn("PostgreSQL fast shutdown timed out; forcing immediate shutdown", "timeout", stopTimeout, "log", c.logPath)
	c.signal(syscall.SIGQUIT)
	if !c.waitExit(quitTimeout) {
		// Negative pid: the whole process group, so no backend survives.
		_ = syscall.Kill(-c.pid, syscall.SIGKILL)
		<-c.done
	}
	return fmt.Errorf("pglaunch: PostgreSQL did not shut down within %s and was stopped forcibly; see %s", stopTimeout, c.logPath)
}

// signal sends sig to the postmaster only; it relays the right signals to
// its children itself.
func (c *Cluster) signal(sig syscall.Signal) {
	if err := syscall.Kill(c.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		c.logger.Warn("signalling PostgreSQL", "signal", sig, "pid", c.pid, "err", err)
	}
}

// waitExit reports whether the server exited within d.
func (c *Cluster) waitExit(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.done:
		return true
	case <-t.C:
		return false
	}
}

// exitError turns the recorded exit status into Stop's result: nil for a
// clean exit, otherwise what went wrong and where to look.
func (c *Cluster) exitError(what string) error {
	if c.exitErr == nil {
		return nil
	}
	return fmt.Errorf("pglaunch: %s: %w; see %s", what, c.exitErr, c.logPath)
}

func removeTempSocketDir(dir string, temp bool) {
	if temp {
		os.RemoveAll(dir)
	}
}
