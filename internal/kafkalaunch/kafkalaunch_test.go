package kafkalaunch

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestVersionMatchesCompose keeps the launcher's Kafka and the compose
// file's image the same release: the tests must run the broker that
// production runs.
func TestVersionMatchesCompose(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join("..", "..", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	images := regexp.MustCompile(`apache/kafka:([0-9A-Za-z.\-]+)`).FindAllSubmatch(b, -1)
	if len(images) == 0 {
		t.Fatal("docker-compose.yml names no apache/kafka image")
	}
	for _, m := range images {
		if got := string(m[1]); got != Version {
			t.Errorf("docker-compose.yml runs apache/kafka:%s but maven/pom.xml resolves kafka_2.13 %s; change both together", got, Version)
		}
	}
}

// launch starts a cluster of n nodes for t, stopped when t ends. The
// launcher tests start real JVMs, so they run with TEST_KAFKA=apache
// (make test-kafka, and CI).
func launch(t *testing.T, n int, props map[string]string) *Cluster {
	t.Helper()
	if os.Getenv("TEST_KAFKA") != "apache" {
		t.Skip("starts Apache Kafka JVMs: run with TEST_KAFKA=apache (make test-kafka)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := Start(ctx, Config{Dir: t.TempDir(), Nodes: n, HeapMB: 384, QuickStart: true, Props: props, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("starting %d Kafka nodes: %v", n, err)
	}
	t.Cleanup(c.Stop)
	return c
}

func client(t *testing.T, c *Cluster, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.Addrs()...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// alive reports whether a process with pid exists.
func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func TestSingleNode(t *testing.T) {
	t.Parallel()
	c := launch(t, 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl := client(t, c, kgo.ConsumeTopics("t"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, 1, -1, nil, "t"); err != nil {
		t.Fatalf("creating topic: %v", err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "t", Value: []byte("hello")}).FirstErr(); err != nil {
		t.Fatalf("producing: %v", err)
	}
	fs := cl.PollFetches(ctx)
	if err := fs.Err0(); err != nil {
		t.Fatalf("fetching: %v", err)
	}
	if recs := fs.Records(); len(recs) != 1 || string(recs[0].Value) != "hello" {
		t.Fatalf("fetched %v, want the one record produced", recs)
	}
	// No topic appears by itself: the registry creates its own.
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "not-created"}).FirstErr(); err == nil {
		t.Error("producing to a missing topic succeeded: auto-creation is on")
	}

	cmd, _ := c.nodes[0].process()
	pid := cmd.Process.Pid
	c.Stop()
	if c.nodes[0].Running() || alive(pid) {
		t.Errorf("JVM %d still running after Stop", pid)
	}
}

// TestCluster checks the three-node cluster's promises: topics get three
// replicas and min.insync.replicas=2; a leader killed with SIGKILL is
// replaced and acks=all writes go on; the node comes back on its data.
func TestCluster(t *testing.T) {
	t.Parallel()
	c := launch(t, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl := client(t, c, kgo.RequiredAcks(kgo.AllISRAcks()))
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, 1, -1, nil, "t"); err != nil {
		t.Fatalf("creating topic: %v", err)
	}
	var td kadm.TopicDetail
	for { // KRaft creates topics asynchronously: metadata may lag a moment
		tds, err := adm.ListTopics(ctx, "t")
		if err == nil && tds["t"].Err == nil && len(tds["t"].Partitions) == 1 && tds["t"].Partitions[0].Leader >= 0 {
			td = tds["t"]
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("topic t never listed: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := len(td.Partitions[0].Replicas); got != 3 {
		t.Errorf("topic created with default replication has %d replicas, want 3", got)
	}
	rcs, err := adm.DescribeTopicConfigs(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"min.insync.replicas": "2", "unclean.leader.election.enable": "false"}
	for _, cfg := range rcs[0].Configs {
		if w, ok := want[cfg.Key]; ok {
			if cfg.MaybeValue() != w {
				t.Errorf("%s=%s, want %s", cfg.Key, cfg.MaybeValue(), w)
			}
			delete(want, cfg.Key)
		}
	}
	if len(want) > 0 {
		t.Errorf("configs not described: %v", want)
	}

	leader := c.Node(td.Partitions[0].Leader)
	leader.Kill()
	if leader.Running() {
		t.Fatal("killed node still running")
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "t", Value: []byte("after kill")}).FirstErr(); err != nil {
		t.Fatalf("acks=all produce with one of three nodes killed: %v", err)
	}
	if err := leader.Start(ctx); err != nil {
		t.Fatalf("restarting node %d: %v", leader.ID(), err)
	}

	// A paused node keeps its process; Resume lets it go on.
	n := c.Node(1)
	n.Pause()
	cmd, _ := n.process()
	st := ""
	for range 50 { // the signal is delivered asynchronously
		if st = procState(t, cmd.Process.Pid); st == "T" {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st != "T" {
		t.Errorf("paused node's state %q, want T (stopped)", st)
	}
	n.Resume()
}

// procState reads a process's state letter from /proc (Linux).
func procState(t *testing.T, pid int) string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if errors.Is(err, os.ErrNotExist) {
		t.Skip("no /proc")
	}
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`\) (\S) `).FindSubmatch(b)
	if m == nil {
		t.Fatalf("cannot parse /proc/%d/stat", pid)
	}
	return string(m[1])
}

// TestParentDeathKillsBroker runs a child test binary that starts a
// broker and is then killed with SIGKILL, as a test binary that panics or
// times out is: the kernel must take the JVM down with it.
func TestParentDeathKillsBroker(t *testing.T) {
	if os.Getenv("KAFKALAUNCH_CHILD") == "1" {
		c := launch(t, 1, nil)
		cmd, _ := c.nodes[0].process()
		fmt.Printf("JVM %d\n", cmd.Process.Pid)
		time.Sleep(time.Hour)
		return
	}
	if os.Getenv("TEST_KAFKA") != "apache" {
		t.Skip("starts Apache Kafka JVMs: run with TEST_KAFKA=apache (make test-kafka)")
	}
	t.Parallel()
	child := exec.Command(os.Args[0], "-test.run=^TestParentDeathKillsBroker$", "-test.v")
	child.Env = append(os.Environ(), "KAFKALAUNCH_CHILD=1")
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Process.Kill()
	pid := 0
	sc := bufio.NewScanner(out)
	for pid == 0 && sc.Scan() {
		fmt.Sscanf(sc.Text(), "JVM %d", &pid)
	}
	if pid == 0 {
		t.Fatal("the child never reported its JVM")
	}
	child.Process.Kill()
	child.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if alive(pid) {
		syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("JVM %d outlived the process that started it", pid)
	}
}

// TestNewClusterIDNeverLooksLikeAnOption: a cluster id starting with '-'
// made kafka-storage format fail ("argument --cluster-id/-t: expected one
// argument"), one start in 64; CI failed on it. 4096 ids would include
// ~64 such ids without the fix.
func TestNewClusterIDNeverLooksLikeAnOption(t *testing.T) {
	t.Parallel()
	for range 4096 {
		id := newClusterID()
		if strings.HasPrefix(id, "-") {
			t.Fatalf("cluster id %q starts with '-'", id)
		}
		if b, err := base64.RawURLEncoding.DecodeString(id); err != nil || len(b) != 16 {
			t.Fatalf("cluster id %q: %d bytes, %v; want 16 bytes of URL-safe base64", id, len(b), err)
		}
	}
}
