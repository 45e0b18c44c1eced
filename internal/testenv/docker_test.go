package testenv

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestChoose(t *testing.T) {
	t.Parallel()
	const url, brokers = "postgres://db", "127.0.0.1:9092"
	tests := []struct {
		name      string
		s         settings
		reachable bool
		want      choice
	}{
		{"nothing set", settings{}, false, choice{Postgres: sourceLocal, Kafka: sourceLocal}},
		{"docker off ignores the engine", settings{}, true, choice{Postgres: sourceLocal, Kafka: sourceLocal}},
		{"env only", settings{DatabaseURL: url, KafkaBrokers: brokers}, false, choice{Postgres: sourceEnv, Kafka: sourceEnv}},
		{"docker", settings{Docker: true}, true, choice{Postgres: sourceDocker, Kafka: sourceDocker}},
		{"docker unreachable", settings{Docker: true}, false,
			choice{Postgres: sourceLocal, Kafka: sourceLocal, DockerUnavailable: true}},
		{"database URL wins", settings{Docker: true, DatabaseURL: url}, true, choice{Postgres: sourceEnv, Kafka: sourceDocker}},
		{"brokers win", settings{Docker: true, KafkaBrokers: brokers}, true, choice{Postgres: sourceDocker, Kafka: sourceEnv}},
		{"database URL wins, docker unreachable", settings{Docker: true, DatabaseURL: url}, false,
			choice{Postgres: sourceEnv, Kafka: sourceLocal, DockerUnavailable: true}},
		{"both win: no engine needed", settings{Docker: true, DatabaseURL: url, KafkaBrokers: brokers}, false,
			choice{Postgres: sourceEnv, Kafka: sourceEnv}},
		{"apache", settings{Apache: true}, false, choice{Postgres: sourceLocal, Kafka: sourceApache}},
		{"apache beside docker", settings{Docker: true, Apache: true}, true, choice{Postgres: sourceDocker, Kafka: sourceApache}},
		{"apache needs no engine with a database URL", settings{Docker: true, Apache: true, DatabaseURL: url}, false,
			choice{Postgres: sourceEnv, Kafka: sourceApache}},
		{"brokers win over apache", settings{Apache: true, KafkaBrokers: brokers}, false, choice{Postgres: sourceLocal, Kafka: sourceEnv}},
	}
	for _, tt := range tests {
		if got := choose(tt.s, tt.reachable); got != tt.want {
			t.Errorf("%s: choose(%+v, %v) = %+v, want %+v", tt.name, tt.s, tt.reachable, got, tt.want)
		}
	}
}

func TestWantsDocker(t *testing.T) {
	t.Parallel()
	for s, want := range map[settings]bool{
		{}:                                false,
		{Docker: true}:                    true,
		{Docker: true, DatabaseURL: "x"}:  true,
		{Docker: true, KafkaBrokers: "x"}: true,
		{Docker: true, DatabaseURL: "x", KafkaBrokers: "y"}: false,
		{Docker: true, DatabaseURL: "x", Apache: true}:      false,
	} {
		if got := s.wantsDocker(); got != want {
			t.Errorf("%+v.wantsDocker() = %v, want %v", s, got, want)
		}
	}
}

func TestFallbackNotice(t *testing.T) {
	t.Parallel()
	reason := errors.New("rootless Docker not found\nsocket not found")
	got := fallbackNotice(choose(settings{Docker: true}, false), reason)
	want := "testenv: REGISTRY_TEST_DOCKER=1 but no Docker engine is reachable (rootless Docker not found socket not found); " +
		"using the private PostgreSQL cluster and in-process Kafka"
	if got != want {
		t.Errorf("notice:\n got %q\nwant %q", got, want)
	}
	got = fallbackNotice(choose(settings{Docker: true, KafkaBrokers: "b:9092"}, false), reason)
	if !strings.HasSuffix(got, "using the private PostgreSQL cluster and Kafka at TEST_KAFKA_BROKERS") {
		t.Errorf("notice with TEST_KAFKA_BROKERS set: %q", got)
	}
}

// fallbackChild marks the run of this test binary that TestDockerFallback
// starts, with REGISTRY_TEST_DOCKER=1.
const fallbackChild = "TESTENV_FALLBACK_CHILD"

// TestDockerFallback runs this test binary again with REGISTRY_TEST_DOCKER=1,
// where TestDockerFallbackChild uses both dependencies twice. Without a
// Docker engine (as in CI) the child must print the fallback line exactly
// once and still get working dependencies; with one, it gets them from
// containers and prints no such line.
func TestDockerFallback(t *testing.T) {
	t.Parallel()
	if os.Getenv(fallbackChild) != "" {
		t.Skip("this is the child run")
	}
	s := readSettings()
	s.Docker = true
	if !s.wantsDocker() {
		t.Skip("TEST_DATABASE_URL and TEST_KAFKA_BROKERS are both set: REGISTRY_TEST_DOCKER=1 would change nothing")
	}
	reachErr := pingDocker()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDockerFallbackChild$", "-test.v")
	cmd.Env = append(os.Environ(), "REGISTRY_TEST_DOCKER=1", fallbackChild+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child run failed: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--- PASS: TestDockerFallbackChild") {
		t.Fatalf("child run did not pass TestDockerFallbackChild:\n%s", out)
	}
	notices := strings.Count(string(out), "testenv: REGISTRY_TEST_DOCKER=1 but no Docker engine is reachable")
	want := 0
	if reachErr != nil {
		want = 1
		t.Logf("no Docker engine here (%v): the child took the fallback", reachErr)
	}
	if notices != want {
		t.Fatalf("child printed the fallback line %d times, want %d:\n%s", notices, want, out)
	}
}

func TestDockerFallbackChild(t *testing.T) {
	if os.Getenv(fallbackChild) == "" {
		t.Skip("run by TestDockerFallback")
	}
	_, c := selected()
	t.Logf("selection under REGISTRY_TEST_DOCKER=1: %+v", c)
	// Twice, in turn: a shared broker is held until its test ends.
	for _, name := range []string{"first", "second"} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			pool, _ := Database(t)
			var one int
			if err := pool.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
				t.Fatalf("querying the test database: %d, %v", one, err)
			}
			cl, err := kgo.NewClient(kgo.SeedBrokers(Kafka(t)...))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			if _, err := kadm.NewClient(cl).ListBrokers(ctx); err != nil {
				t.Fatalf("asking the test broker for its brokers: %v", err)
			}
		})
	}
}
