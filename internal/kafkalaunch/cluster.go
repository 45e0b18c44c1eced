package kafkalaunch

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// readyTimeout bounds how long a node may take from `java` to serving
	// metadata that lists it; a cold JVM on a busy two-core machine takes
	// about 10 s.
	readyTimeout = 2 * time.Minute
	// stopTimeout is how long a controlled shutdown may take before the
	// node is killed.
	stopTimeout = 20 * time.Second
)

// Config configures a cluster of combined broker and controller nodes.
type Config struct {
	// Dir holds everything the cluster writes: each node's data, server
	// properties and log under Dir/node-<id>. Required. A node whose data
	// is already formatted is started on it as it is.
	Dir string
	// Nodes is the number of nodes, each a broker and a KRaft controller
	// voter. Defaults to 1.
	Nodes int
	// JarsDir is the classpath directory. Defaults to Jars with the
	// default cache directory.
	JarsDir string
	// Java is the java binary (17 or later). Defaults to `java` on PATH.
	Java string
	// HeapMB is each JVM's maximum heap in MiB. Defaults to 512.
	HeapMB int
	// QuickStart runs the JVMs with the first JIT tier only and the serial
	// collector: a node starts about twice as fast on a busy two-core
	// machine, at the cost of peak throughput. Tests and chaos runs, which
	// start and restart nodes often, want it; a benchmark does not.
	QuickStart bool
	// Props are server properties that override the defaults (see
	// serverProps), for every node.
	Props map[string]string
	// Logger receives lifecycle messages. Defaults to slog.Default(). The
	// brokers' own output goes to Dir/node-<id>/server.log.
	Logger *slog.Logger
}

func (cfg Config) withDefaults(ctx context.Context) (Config, error) {
	if cfg.Dir == "" {
		return cfg, errors.New("kafkalaunch: Config.Dir is required")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return cfg, fmt.Errorf("kafkalaunch: resolving %s: %w", cfg.Dir, err)
	}
	cfg.Dir = dir
	cfg.Nodes = cmp.Or(cfg.Nodes, 1)
	cfg.HeapMB = cmp.Or(cfg.HeapMB, 512)
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	if cfg.Nodes < 1 {
		return cfg, fmt.Errorf("kafkalaunch: %d nodes", cfg.Nodes)
	}
	if cfg.Java == "" {
		if cfg.Java, err = exec.LookPath("java"); err != nil {
			return cfg, fmt.Errorf("kafkalaunch: a Java runtime (17 or later) is needed to run Apache Kafka: %w", err)
		}
	}
	if cfg.JarsDir == "" {
		if cfg.JarsDir, err = Jars(ctx, "", cfg.Logger); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

// Cluster is a running set of nodes started by Start. Its methods are safe
// for concurrent use.
type Cluster struct {
	cfg   Config
	id    string // the KRaft cluster id
	nodes []*Node
}

// Start formats each node's storage (unless already formatted) and starts
// every node, returning once each one serves metadata that lists all of
// them. ctx bounds the start only; the nodes run until Stop, or until the
// calling process dies.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	cfg, err := cfg.withDefaults(ctx)
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(2 * cfg.Nodes)
	if err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg, id: newClusterID()}
	for i := range cfg.Nodes {
		c.nodes = append(c.nodes, &Node{
			c: c, id: int32(i + 1), port: ports[2*i], ctrlPort: ports[2*i+1],
			dir: filepath.Join(cfg.Dir, fmt.Sprintf("node-%d", i+1)),
		})
	}
	if err := c.format(ctx); err != nil {
		return nil, err
	}
	for _, n := range c.nodes {
		if err := n.launch(); err != nil {
			c.Stop()
			return nil, err
		}
	}
	for _, n := range c.nodes {
		if err := n.awaitReady(ctx, len(c.nodes)); err != nil {
			c.Stop()
			return nil, err
		}
	}
	cfg.Logger.Info("Apache Kafka started", "version", Version, "nodes", len(c.nodes), "brokers", strings.Join(c.Addrs(), ","), "dir", cfg.Dir)
	return c, nil
}

// newClusterID returns a random KRaft cluster id: 16 bytes, unpadded
// URL-safe base64, as `kafka-storage random-uuid` prints. Like Kafka's
// Uuid.randomUuid it never starts with '-': kafka-storage's argument
// parser would take such an id for an option ("argument --cluster-id:
// expected one argument"), which failed one start in 64.
func newClusterID() string {
	b := make([]byte, 16)
	for {
		rand.Read(b)
		if id := base64.RawURLEncoding.EncodeToString(b); id[0] != '-' {
			return id
		}
	}
}

// freePorts asks the kernel for n distinct unused ports on 127.0.0.1,
// holding them all at once so that none repeats. Another process can take
// one before a broker binds it; the broker then fails to start, loudly.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("kafkalaunch: picking a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Nodes returns the nodes, in id order (ids start at 1).
func (c *Cluster) Nodes() []*Node { return slices.Clone(c.nodes) }

// Node returns the node with broker id id, or nil.
func (c *Cluster) Node(id int32) *Node {
	for _, n := range c.nodes {
		if n.id == id {
			return n
		}
	}
	return nil
}

// Addrs returns every node's client address (host:port on 127.0.0.1),
// running or not: the seed brokers to give clients.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.Addr()
	}
	return out
}

// Stop stops every node: a controlled shutdown of all at once, and SIGKILL
// for any still running after 20 s (a broker whose controllers went first
// can wait for them for ever). It returns when every JVM has exited.
func (c *Cluster) Stop() {
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		wg.Go(func() { n.Stop() })
	}
	wg.Wait()
}

// format runs the storage tool for every node whose data directory is not
// formatted yet, all at once.
func (c *Cluster) format(ctx context.Context) error {
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		if err := n.writeConfig(); err != nil {
			return err
		}
		if _, err := os.Stat(filepath.Join(n.dataDir(), "meta.properties")); err == nil {
			continue
		}
		wg.Go(func() { errs[i] = n.format(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// serverProps are a node's server properties: Kafka's defaults but for
// what a private loopback cluster needs, and the settings the registry
// asks of production clusters (docs/operations.md): no topic appears by
// itself, and with three nodes or more every topic is written to three
// replicas, two of which must acknowledge, and no out-of-sync replica ever
// becomes leader.
func (c *Cluster) serverProps(n *Node) map[string]string {
	var voters []string
	for _, o := range c.nodes {
		voters = append(voters, fmt.Sprintf("%d@127.0.0.1:%d", o.id, o.ctrlPort))
	}
	rf := min(3, len(c.nodes))
	minISR := 1
	if len(c.nodes) >= 3 {
		minISR = 2
	}
	p := map[string]string{
		"process.roles":                                    "broker,controller",
		"node.id":                                          strconv.Itoa(int(n.id)),
		"controller.quorum.voters":                         strings.Join(voters, ","),
		"listeners":                                        fmt.Sprintf("PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d", n.port, n.ctrlPort),
		"advertised.listeners":                             "PLAINTEXT://" + n.Addr(),
		"controller.listener.names":                        "CONTROLLER",
		"listener.security.protocol.map":                   "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
		"inter.broker.listener.name":                       "PLAINTEXT",
		"log.dirs":                                         n.dataDir(),
		"auto.create.topics.enable":                        "false",
		"default.replication.factor":                       strconv.Itoa(rf),
		"min.insync.replicas":                              strconv.Itoa(minISR),
		"unclean.leader.election.enable":                   "false",
		"offsets.topic.replication.factor":                 strconv.Itoa(rf),
		"offsets.topic.num.partitions":                     strconv.Itoa(rf), // Kafka's 50 slow every start down
		"transaction.state.log.replication.factor":         strconv.Itoa(rf),
		"transaction.state.log.min.isr":                    strconv.Itoa(minISR),
		"transaction.state.log.num.partitions":             "1",
		"share.coordinator.state.topic.replication.factor": strconv.Itoa(rf),
		"share.coordinator.state.topic.min.isr":            strconv.Itoa(minISR),
	}
	maps.Copy(p, c.cfg.Props)
	return p
}

// log4j2Config sends the broker's warnings, and the line saying it started,
// to its stdout (server.log).
const log4j2Config = `status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = out
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = info
`

// Node is one combined broker and controller of a Cluster.
type Node struct {
	c              *Cluster
	id             int32
	port, ctrlPort int
	dir            string

	mu   sync.Mutex
	cmd  *exec.Cmd     // nil when not started
	done chan struct{} // closed when cmd exits
}

// ID returns the node's broker (and controller) id.
func (n *Node) ID() int32 { return n.id }

// Addr returns the node's client address, host:port on 127.0.0.1.
func (n *Node) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port)) }

// LogPath returns the file the node's JVM writes its output to.
func (n *Node) LogPath() string { return filepath.Join(n.dir, "server.log") }

func (n *Node) dataDir() string      { return filepath.Join(n.dir, "data") }
func (n *Node) propsPath() string    { return filepath.Join(n.dir, "server.properties") }
func (n *Node) log4jPath() string    { return filepath.Join(n.dir, "log4j2.properties") }
func (n *Node) classpath() string    { return filepath.Join(n.c.cfg.JarsDir, "*") }
func (n *Node) logger() *slog.Logger { return n.c.cfg.Logger }

func (n *Node) writeConfig() error {
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		return fmt.Errorf("kafkalaunch: creating %s: %w", n.dir, err)
	}
	props := n.c.serverProps(n)
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(props)) {
		fmt.Fprintf(&b, "%s=%s\n", k, props[k])
	}
	if err := os.WriteFile(n.propsPath(), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("kafkalaunch: writing %s: %w", n.propsPath(), err)
	}
	if err := os.WriteFile(n.log4jPath(), []byte(log4j2Config), 0o644); err != nil {
		return fmt.Errorf("kafkalaunch: writing %s: %w", n.log4jPath(), err)
	}
	return nil
}

// format runs kafka.tools.StorageTool on the node's data directory.
func (n *Node) format(ctx context.Context) error {
	// A short-lived tool: the first JIT tier only starts it faster.
	cmd := n.javaCommand(ctx, []string{"-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"}, "kafka.tools.StorageTool", "format",
		"--cluster-id", n.c.id, "--config", n.propsPath(), "--ignore-formatted")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("kafkalaunch: formatting storage of node %d: %w\n%s", n.id, err, tail(b, 4<<10))
	}
	return nil
}

// javaCommand builds a `java` command line on the server classpath, in
// its own process group and killed if we die.
func (n *Node) javaCommand(ctx context.Context, flags []string, main string, args ...string) *exec.Cmd {
	jvm := []string{"-Xms64m"}
	if !slices.Contains(flags, "-XX:+UseSerialGC") {
		// kafka-run-class.sh's collector settings.
		jvm = append(jvm, "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent")
	}
	jvm = append(append(jvm, flags...), "-Djava.awt.headless=true",
		"-Dlog4j2.configurationFile="+n.log4jPath(),
		"-cp", n.classpath(), main)
	cmd := exec.CommandContext(ctx, n.c.cfg.Java, append(jvm, args...)...)
	cmd.Dir = n.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	setParentDeathSignal(cmd.SysProcAttr)
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	return cmd
}

// Start starts a stopped or killed node on its data and ports and waits
// until it serves metadata that lists it (it has caught up with the
// controllers and been unfenced). Starting a running node does nothing.
func (n *Node) Start(ctx context.Context) error {
	if n.Running() {
		return nil
	}
	if err := n.launch(); err != nil {
		return err
	}
	if err := n.awaitReady(ctx, 1); err != nil {
		n.Kill()
		return err
	}
	n.logger().Info("Kafka node started", "node", n.id, "addr", n.Addr())
	return nil
}

// launch starts the node's JVM without waiting for it.
func (n *Node) launch() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return nil
	}
	logFile, err := os.OpenFile(n.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("kafkalaunch: opening %s: %w", n.LogPath(), err)
	}
	defer logFile.Close() // the child holds its own descriptor
	flags := []string{fmt.Sprintf("-Xmx%dm", n.c.cfg.HeapMB)}
	if n.c.cfg.QuickStart {
		flags = append(flags, "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
	}
	cmd := n.javaCommand(context.Background(), flags, "kafka.Kafka", n.propsPath())
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("kafkalaunch: starting node %d: %w", n.id, err)
	}
	done := make(chan struct{})
	n.cmd, n.done = cmd, done
	go func() {
		cmd.Wait() //nolint:errcheck // a killed node exits non-zero by design
		n.mu.Lock()
		if n.cmd == cmd {
			n.cmd = nil
		}
		n.mu.Unlock()
		close(done)
	}()
	return nil
}

// Running reports whether the node's JVM is running (paused counts).
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

// process returns the running JVM and its exit channel, or nils.
func (n *Node) process() (*exec.Cmd, chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd, n.done
}

// Kill sends SIGKILL to the node's process group and waits for it to
// exit: a crash, as a power cut is to the process (the page cache keeps
// what the broker wrote).
func (n *Node) Kill() {
	cmd, done := n.process()
	if cmd == nil {
		return
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) //nolint:errcheck // gone already is fine
	<-done
}

// Stop asks the node for a controlled shutdown (SIGTERM: leadership moves
// away first) and waits up to 20 s, then kills it.
func (n *Node) Stop() {
	cmd, done := n.process()
	if cmd == nil {
		return
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGCONT) //nolint:errcheck // a paused node cannot stop
	syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)  //nolint:errcheck
	select {
	case <-done:
	case <-time.After(stopTimeout):
		n.logger().Warn("Kafka node did not stop in time; killing it", "node", n.id, "timeout", stopTimeout)
		n.Kill()
	}
}

// Pause stops the node's JVM (SIGSTOP) without it knowing: it keeps its
// connections and sends nothing, as a long GC pause or a frozen VM.
func (n *Node) Pause() { n.signal(syscall.SIGSTOP) }

// Resume continues a paused node (SIGCONT).
func (n *Node) Resume() { n.signal(syscall.SIGCONT) }

func (n *Node) signal(sig syscall.Signal) {
	if cmd, _ := n.process(); cmd != nil {
		syscall.Kill(-cmd.Process.Pid, sig) //nolint:errcheck // gone already is fine
	}
}
