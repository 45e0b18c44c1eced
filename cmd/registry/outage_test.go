package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/usernameregistry/registry/internal/kafka"
	"github.com/usernameregistry/registry/internal/kafkalaunch"
	"github.com/usernameregistry/registry/internal/testenv"
)

// stopBound is how long `registry serve` may take to exit after SIGINT
// with its broker down and a claim in flight: the claim in flight is let
// finish (RunAPI stops accepting and lets requests end), and it ends at
// the API's 10 s write bound with 503 unavailable; 5 s more cover closing
// the producer, which must not wait for the broker, the decisions reader
// and the database pool on a busy machine. docs/operations.md says so.
const stopBound = 15 * time.Second

// Ways a broker goes down under a running registry.
const (
	brokerKilled = "killed" // kill -9 (kfake: closed): connections are refused
	brokerFrozen = "frozen" // SIGSTOP (kfake: its request loop blocked from the first produce on): requests hang unanswered
)

// stoppableKafka gives t a broker of its own, which down takes down the
// way named: in-process kfake, or under TEST_KAFKA=apache a single Apache
// Kafka broker from jars (internal/kafkalaunch).
func stoppableKafka(t *testing.T, way string) (seeds []string, down func()) {
	t.Helper()
	if os.Getenv("TEST_KAFKA") == "apache" {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
		defer cancel()
		c, err := kafkalaunch.Start(ctx, kafkalaunch.Config{Dir: t.TempDir(), HeapMB: 384, QuickStart: true,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
		if err != nil {
			t.Fatalf("starting Apache Kafka: %v", err)
		}
		t.Cleanup(c.Stop)
		n := c.Nodes()[0]
		if way == brokerFrozen {
			t.Cleanup(n.Resume) // before Stop: a paused node cannot stop
			return c.Addrs(), n.Pause
		}
		return c.Addrs(), n.Kill
	}
	c, err := kafka.Embedded("", 0)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	closeBroker := func() { once.Do(c.Close) }
	t.Cleanup(closeBroker)
	if way == brokerFrozen {
		// The first produce request after down blocks kfake's one request
		// loop until cleanup, so the whole broker stops answering, as
		// SIGSTOP does to Apache Kafka. (Sleeping each produce request with
		// SleepControl instead left kfake's loop deadlocked on its control
		// mutex when the many slept requests woke together at cleanup:
		// goleak found its goroutine after the tests.)
		release := make(chan struct{})
		t.Cleanup(func() { close(release) }) // before closeBroker: Close waits for the loop
		return c.ListenAddrs(), func() {
			c.ControlKey(kmsg.Produce.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
				<-release
				return nil, nil, false
			})
		}
	}
	return c.ListenAddrs(), closeBroker
}

// answer is an API answer as a test reads it.
type answer struct {
	Code   int
	Status string `json:"status"`
	Reason string `json:"reason"`
	Err    error
	Took   time.Duration
}

func postClaim(ctx context.Context, api, wait string) answer {
	start := time.Now()
	body := fmt.Sprintf(`{"username":"outage%s","user_id":%q}`, uuid.NewString()[:8], uuid.NewString())
	req, err := http.NewRequestWithContext(ctx, "POST", api+"/v1/claims?wait="+wait, strings.NewReader(body))
	if err != nil {
		return answer{Err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{Err: err, Took: time.Since(start)}
	}
	defer resp.Body.Close()
	a := answer{Code: resp.StatusCode}
	a.Err = json.NewDecoder(resp.Body).Decode(&a)
	a.Took = time.Since(start)
	return a
}

// TestServeWithBrokerDown is the broker outage of issue 15, tried on a
// real `registry serve` process with --max-waiters 1, its broker killed
// or frozen (SIGSTOP: requests reach it and are never answered, so
// franz-go's idempotent producer never fails them, can_fail=false): a
// caller that disconnects while its claim waits frees its waiter slot
// (the next claim is not refused "overloaded"), that next claim is
// answered 503 unavailable within the 10 s write bound, and SIGINT sent
// while it is in flight stops the process within stopBound, with exit
// status 0 and no error. Before the fixes of issue 15, with the broker
// frozen the claim waited for ever, the slot was never freed, and SIGINT
// took 35 s and ended with "context deadline exceeded".
func TestServeWithBrokerDown(t *testing.T) {
	t.Parallel()
	for _, way := range []string{brokerKilled, brokerFrozen} {
		t.Run(way, func(t *testing.T) {
			t.Parallel()
			serveWithBrokerDown(t, way)
		})
	}
}

func serveWithBrokerDown(t *testing.T, way string) {
	seeds, stopBroker := stoppableKafka(t, way)
	_, dbURL := testenv.Database(t)
	cmd := exec.Command(os.Args[0], "serve", "--http", "127.0.0.1:0", "--ops-addr", "", "--partitions", "1", "--max-waiters", "1", "--insecure-no-auth")
	cmd.Env = append(os.Environ(), runAsRegistry+"=1", "REGISTRY_KAFKA_BROKERS="+strings.Join(seeds, ","), "DATABASE_URL="+dbURL)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill() //nolint:errcheck // gone already is fine
	})
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "registry API listening on "); ok {
				urls <- u
			}
		}
		io.Copy(io.Discard, stdout) //nolint:errcheck // drain
	}()
	var api string
	select {
	case api = <-urls:
	case err := <-exited:
		t.Fatalf("serve exited at start: %v\n%s", err, stderr.String())
	case <-time.After(2 * time.Minute):
		t.Fatalf("serve never listened\n%s", stderr.String())
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if resp, err := http.Get(api + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not ready within a minute\n%s", stderr.String())
		}
	}

	stopBroker()

	// A caller that leaves while its claim waits on the dead broker.
	leave, left := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer left()
	if a := postClaim(leave, api, "30s"); !errors.Is(a.Err, context.DeadlineExceeded) {
		t.Fatalf("the claim of the caller that leaves was answered: %+v", a)
	}
	time.Sleep(200 * time.Millisecond) // the server sees the connection close

	// The next claim must get the only waiter slot, and so wait for the
	// broker until the write bound, not be refused "overloaded".
	next := make(chan answer, 1)
	go func() { next <- postClaim(context.Background(), api, "30s") }()
	time.Sleep(500 * time.Millisecond)
	select {
	case a := <-next:
		t.Fatalf("the claim after the caller left was answered at once: %+v (its slot was not freed)", a)
	default:
	}

	sent := time.Now()
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		took := time.Since(sent)
		t.Logf("serve exited %v after SIGINT (broker down, a claim in flight)", took.Round(time.Millisecond))
		if err != nil {
			t.Errorf("serve ended with %v after SIGINT, want exit status 0\n%s", err, stderr.String())
		}
		if took > stopBound {
			t.Errorf("serve took %v to stop after SIGINT, want at most %v", took, stopBound)
		}
	case <-time.After(stopBound + 30*time.Second):
		t.Fatalf("serve still running %v after SIGINT\n%s", stopBound+30*time.Second, stderr.String())
	}
	// The claims that failed are logged as errors, and so are the Kafka
	// client's own reports of the broker it cannot reach (component=kafka:
	// on Apache Kafka a broker killed mid-handshake is "unable to request
	// api versions … closed the connection", at franz-go's ERROR level):
	// both are the fault this test injects. Nothing else may be an error,
	// and nothing may say "deadline exceeded" (the stop used to end with
	// "stopping HTTP server: context deadline exceeded").
	for _, line := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(line, `msg="claim failed`) {
			continue
		}
		kafkaReport := strings.Contains(line, "component=kafka") && !strings.Contains(line, "deadline exceeded")
		if (strings.Contains(line, "level=ERROR") && !kafkaReport) || strings.Contains(line, "deadline exceeded") {
			t.Errorf("serve's stop was not clean: %s", line)
		}
	}
	a := <-next
	if a.Err != nil || a.Code != http.StatusServiceUnavailable || a.Reason != "unavailable" {
		t.Errorf("the claim in flight: %d %q %q %v, want 503 unavailable", a.Code, a.Status, a.Reason, a.Err)
	}
	if a.Took > 10*time.Second+3*time.Second {
		t.Errorf("the claim in flight was answered after %v; the write bound is 10s", a.Took)
	}
}
