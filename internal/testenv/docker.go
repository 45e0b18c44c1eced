package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/modules/postgres"
	"github.com/testcontainers/testcontainers-go/wait"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/internal/kafkalaunch"
)

// The images REGISTRY_TEST_DOCKER=1 runs, pinned so that every run tests
// the same servers.
const (
	postgresImage = "postgres:17.6-bookworm" // the same pins as docker-compose.yml
)

// kafkaImage is the Apache Kafka image REGISTRY_TEST_DOCKER=1 runs: the
// release TEST_KAFKA=apache runs from jars, which a test keeps equal to
// docker-compose.yml's.
var kafkaImage = "apache/kafka:" + kafkalaunch.Version

const (
	// dockerProbeTimeout bounds the look for a Docker engine: a missing
	// socket answers at once, but an unreachable DOCKER_HOST must not
	// hold the tests up.
	dockerProbeTimeout = 5 * time.Second
	// containerStartTimeout covers pulling an image and starting it.
	containerStartTimeout = 5 * time.Minute
)

// source is where a dependency comes from.
type source int

const (
	sourceLocal  source = iota // the private PostgreSQL cluster, or in-process kfake
	sourceEnv                  // TEST_DATABASE_URL, or TEST_KAFKA_BROKERS
	sourceDocker               // a container testcontainers-go starts
	sourceApache               // Apache Kafka from jars, without Docker (TEST_KAFKA=apache)
)

func (s source) String() string {
	switch s {
	case sourceEnv:
		return "env"
	case sourceDocker:
		return "docker"
	case sourceApache:
		return "apache"
	}
	return "local"
}

// settings are the environment variables that choose the sources.
type settings struct {
	DatabaseURL  string // TEST_DATABASE_URL
	KafkaBrokers string // TEST_KAFKA_BROKERS
	Docker       bool   // REGISTRY_TEST_DOCKER=1
	Apache       bool   // TEST_KAFKA=apache
}

func readSettings() settings {
	docker, _ := strconv.ParseBool(os.Getenv("REGISTRY_TEST_DOCKER"))
	return settings{
		DatabaseURL:  os.Getenv("TEST_DATABASE_URL"),
		KafkaBrokers: os.Getenv("TEST_KAFKA_BROKERS"),
		Docker:       docker,
		Apache:       os.Getenv("TEST_KAFKA") == "apache",
	}
}

// wantsDocker reports whether some dependency would come from a container,
// so whether to look for a Docker engine at all.
func (s settings) wantsDocker() bool {
	return s.Docker && (s.DatabaseURL == "" || (s.KafkaBrokers == "" && !s.Apache))
}

// choice says where each dependency comes from.
type choice struct {
	Postgres, Kafka source
	// DockerUnavailable is set when REGISTRY_TEST_DOCKER=1 asked for
	// containers but no engine was reachable, so the local path stands in.
	DockerUnavailable bool
}

// choose is the selection rule of the package comment. dockerReachable
// matters only when s.wantsDocker().
func choose(s settings, dockerReachable bool) choice {
	fallback := sourceLocal
	if s.wantsDocker() && dockerReachable {
		fallback = sourceDocker
	}
	c := choice{Postgres: fallback, Kafka: fallback, DockerUnavailable: s.wantsDocker() && !dockerReachable}
	if s.DatabaseURL != "" {
		c.Postgres = sourceEnv
	}
	if s.Apache {
		c.Kafka = sourceApache
	}
	if s.KafkaBrokers != "" {
		c.Kafka = sourceEnv
	}
	return c
}

// fallbackNotice is the line printed when REGISTRY_TEST_DOCKER=1 finds no
// engine; it names what the tests use instead.
func fallbackNotice(c choice, reason error) string {
	return fmt.Sprintf("testenv: REGISTRY_TEST_DOCKER=1 but no Docker engine is reachable (%s); using %s and %s",
		strings.Join(strings.Fields(fmt.Sprint(reason)), " "), describePostgres(c.Postgres), describeKafka(c.Kafka))
}

func describePostgres(s source) string {
	switch s {
	case sourceEnv:
		return "PostgreSQL at TEST_DATABASE_URL"
	case sourceDocker:
		return "a " + postgresImage + " container"
	}
	return "the private PostgreSQL cluster"
}

func describeKafka(s source) string {
	switch s {
	case sourceEnv:
		return "Kafka at TEST_KAFKA_BROKERS"
	case sourceDocker:
		return "a " + kafkaImage + " container"
	case sourceApache:
		return "Apache Kafka " + kafkalaunch.Version + " from jars"
	}
	return "in-process Kafka"
}

var selection struct {
	once     sync.Once
	settings settings
	choice   choice
}

// selected returns the test binary's choice. The first call reads the
// environment and, if it asks for containers, pings Docker; when that
// fails it prints the one fallback line.
func selected() (settings, choice) {
	selection.once.Do(func() {
		s := readSettings()
		var err error
		if s.wantsDocker() {
			err = pingDocker()
		}
		selection.settings, selection.choice = s, choose(s, err == nil)
		if selection.choice.DockerUnavailable {
			fmt.Fprintln(os.Stderr, fallbackNotice(selection.choice, err))
		}
	})
	return selection.settings, selection.choice
}

// pingDocker finds the engine as testcontainers-go will (DOCKER_HOST,
// the Docker context, the default and rootless sockets,
// ~/.testcontainers.properties) and pings it.
func pingDocker() error {
	ctx, cancel := context.WithTimeout(context.Background(), dockerProbeTimeout)
	defer cancel()
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return fmt.Errorf("none answered at DOCKER_HOST, the Docker context or the default sockets: %w", err)
	}
	defer cli.Close()
	if _, err := cli.Ping(ctx, client.PingOptions{}); err != nil {
		return fmt.Errorf("pinging %s: %w", cli.DaemonHost(), err)
	}
	return nil
}

// startPostgres runs PostgreSQL in a container and returns it with the URL
// of its postgres database, the base URL Database creates databases from.
func startPostgres() (testcontainers.Container, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), containerStartTimeout)
	defer cancel()
	c, err := postgres.Run(ctx, postgresImage,
		// The private cluster's settings (internal/pglaunch): parallel
		// tests open many pools, and nothing needs to survive a crash.
		testcontainers.WithCmd("postgres", "-c", "max_connections=200",
			"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"),
		postgres.BasicWaitStrategies(),
	)
	if err != nil {
		testcontainers.TerminateContainer(c) //nolint:errcheck // best effort; Ryuk reaps it otherwise
		return nil, "", fmt.Errorf("starting a %s container: %w", postgresImage, err)
	}
	url, err := c.ConnectionString(ctx, "sslmode=disable")
	if err != nil {
		testcontainers.TerminateContainer(c) //nolint:errcheck // best effort
		return nil, "", fmt.Errorf("reading the PostgreSQL container's address: %w", err)
	}
	return c, url, nil
}

// The Kafka container's listeners. Clients reach PLAINTEXT through the
// port Docker maps 9092 to; BROKER and CONTROLLER stay inside.
const (
	kafkaPort          = "9092/tcp"
	kafkaListenersFile = "/tmp/testenv-advertised-listeners"
	kafkaBrokerAddress = "127.0.0.1:9093" // the broker only connects to itself
)

// kafkaEnv configures the apache/kafka image as a single KRaft node that
// is both broker and controller. The image falls back to its default
// configuration only when no KAFKA_ variable is set, so this is the whole
// configuration but the advertised listeners, which advertiseKafka
// supplies.
var kafkaEnv = map[string]string{
	"CLUSTER_ID":                                     "MkU3OEVBNTcwNTJENDM2Qk",
	"KAFKA_NODE_ID":                                  "1",
	"KAFKA_PROCESS_ROLES":                            "broker,controller",
	"KAFKA_LISTENERS":                                "PLAINTEXT://0.0.0.0:9092,BROKER://0.0.0.0:9093,CONTROLLER://0.0.0.0:9094",
	"KAFKA_LISTENER_SECURITY_PROTOCOL_MAP":           "PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT",
	"KAFKA_INTER_BROKER_LISTENER_NAME":               "BROKER",
	"KAFKA_CONTROLLER_LISTENER_NAMES":                "CONTROLLER",
	"KAFKA_CONTROLLER_QUORUM_VOTERS":                 "1@127.0.0.1:9094",
	"KAFKA_LOG_DIRS":                                 "/tmp/kraft-combined-logs",
	"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":         "1",
	"KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS":             "1",
	"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
	"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":            "1",
	"KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS":         "0",
	// The registry creates its topics (kafka.EnsureTopics); a client
	// asking for a missing one must not get a default-shaped topic.
	"KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
}

// kafkaCommand waits for advertiseKafka's file, complete (its last line
// is "# end": a copy in progress is not read half-written), then starts
// Kafka the way the image does.
const kafkaCommand = `until grep -qs '^# end$' ` + kafkaListenersFile + `; do sleep 0.1; done
. ` + kafkaListenersFile + `
exec /etc/kafka/docker/run`

// startKafka runs Apache Kafka in a container and returns it with the
// seed broker address to give clients.
//
// A client bootstraps from the seed address, then connects to whatever
// address the broker advertises, so the broker must advertise the host
// and port Docker mapped 9092 to, which exist only once the container
// runs. So the container's command waits; a post-start hook reads the
// mapped endpoint and copies in the advertised listeners; then Kafka
// starts with them.
func startKafka() (testcontainers.Container, []string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), containerStartTimeout)
	defer cancel()
	c, err := testcontainers.Run(ctx, kafkaImage,
		testcontainers.WithExposedPorts(kafkaPort),
		testcontainers.WithEnv(kafkaEnv),
		testcontainers.WithEntrypoint("sh", "-c"),
		testcontainers.WithCmd(kafkaCommand),
		testcontainers.WithLifecycleHooks(testcontainers.ContainerLifecycleHooks{
			PostStarts: []testcontainers.ContainerHook{advertiseKafka}, // runs before the wait below
		}),
		testcontainers.WithWaitStrategy(wait.ForLog("Kafka Server started").WithStartupTimeout(2*time.Minute)),
	)
	if err != nil {
		testcontainers.TerminateContainer(c) //nolint:errcheck // best effort; Ryuk reaps it otherwise
		return nil, nil, fmt.Errorf("starting an %s container: %w", kafkaImage, err)
	}
	seed, err := c.PortEndpoint(ctx, kafkaPort, "")
	if err == nil {
		err = checkAdvertised(ctx, seed)
	}
	if err != nil {
		testcontainers.TerminateContainer(c) //nolint:errcheck // best effort
		return nil, nil, err
	}
	return c, []string{seed}, nil
}

func advertiseKafka(ctx context.Context, c testcontainers.Container) error {
	if err := wait.ForMappedPort(kafkaPort).WaitUntilReady(ctx, c); err != nil {
		return fmt.Errorf("waiting for the Kafka container's mapped port: %w", err)
	}
	endpoint, err := c.PortEndpoint(ctx, kafkaPort, "PLAINTEXT")
	if err != nil {
		return fmt.Errorf("reading the Kafka container's mapped port: %w", err)
	}
	file := fmt.Sprintf("export KAFKA_ADVERTISED_LISTENERS='%s,BROKER://%s'\n# end\n", endpoint, kafkaBrokerAddress)
	if err := c.CopyToContainer(ctx, []byte(file), kafkaListenersFile, 0o644); err != nil {
		return fmt.Errorf("copying the advertised listeners into the Kafka container: %w", err)
	}
	return nil
}

// checkAdvertised asks the broker at seed for its metadata and checks that
// it advertises seed itself: otherwise clients would bootstrap, then fail
// to reach the broker.
func checkAdvertised(ctx context.Context, seed string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(seed))
	if err != nil {
		return fmt.Errorf("client for the Kafka container: %w", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	brokers, err := kadm.NewClient(cl).ListBrokers(ctx)
	if err != nil {
		return fmt.Errorf("asking the Kafka container at %s for its brokers: %w", seed, err)
	}
	for _, b := range brokers {
		if got := net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port))); got != seed {
			return fmt.Errorf("the Kafka container advertises %s, but clients reach it at %s", got, seed)
		}
	}
	return nil
}
