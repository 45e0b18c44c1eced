package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims"
	"github.com/usernameregistry/registry/internal/kafka"
	"github.com/usernameregistry/registry/internal/pglaunch"
	"github.com/usernameregistry/registry/projector"
	"github.com/usernameregistry/registry/registrations"
)

// Environment variables are read in cmd only. Each setting has a flag
// whose default comes from its variable, except REGISTRY_LOG_LEVEL, which
// is read before any command parses its flags.
func envOr(key, def string) string {
	if v, ok := os.LookupEnv(key); ok && v != "" {
		return v
	}
	return def
}

// envInt reads a numeric variable; a malformed one is recorded in c.envErrs
// so a typo is an error rather than a silent default.
func (c *config) envInt(key string, def int) int {
	s := os.Getenv(key)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		c.envErrs = append(c.envErrs, fmt.Errorf("%s=%q is not a whole number", key, s))
		return def
	}
	return v
}

// envBool reads a true/false variable the way strconv.ParseBool does (1, t,
// true, TRUE, 0, f, false, …), recording any other value in *errs: a
// REGISTRY_KAFKA_TLS=yes that silently meant "no" would send the SASL
// password in cleartext.
func envBool(key string, errs *[]error) bool {
	s := os.Getenv(key)
	if s == "" {
		return false
	}
	v, err := strconv.ParseBool(s)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("%s=%q is neither true nor false", key, s))
		return false
	}
	return v
}

// envDuration reads a duration variable, recording a malformed one in
// c.envErrs like envInt.
func (c *config) envDuration(key string, def time.Duration) time.Duration {
	s := os.Getenv(key)
	if s == "" {
		return def
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		c.envErrs = append(c.envErrs, fmt.Errorf("%s=%q is not a duration such as 45s", key, s))
		return def
	}
	return v
}

// config is every setting a subcommand may use.
type config struct {
	brokers     string             // REGISTRY_KAFKA_BROKERS
	databaseURL string             // DATABASE_URL; empty means the PG* variables
	httpAddr    string             // REGISTRY_HTTP_ADDR
	partitions  int                // REGISTRY_PARTITIONS
	replication int                // REGISTRY_REPLICATION_FACTOR
	group       string             // REGISTRY_PROJECTOR_GROUP
	maxWaiters  int                // REGISTRY_MAX_WAITERS
	dbConns     int                // REGISTRY_DB_MAX_CONNS
	metricsAddr string             // REGISTRY_METRICS_ADDR, project only
	session     time.Duration      // REGISTRY_SESSION_TIMEOUT, project only
	failpoint   func(string) error // project only, in a failpoints build: see failpointHook
	security    kafka.Security     // REGISTRY_KAFKA_TLS*, REGISTRY_KAFKA_SASL_*
	dataDir     string             // dev only
	pprofAddr   string             // REGISTRY_PPROF_ADDR
	postgres    pglaunch.Binaries  // REGISTRY_POSTGRES*, dev only
	hold        time.Duration      // REGISTRY_HOLD_PERIOD: hold period of released names
	policy      int                // REGISTRY_POLICY_VERSION: the username policy a new database starts under; 0 is the latest
	auth        authConfig         // tokens, TLS, the operator listener, admin keys

	envErrs []error // malformed environment variables
}

// securityFlags declares how to reach a secured Kafka cluster. The SASL
// password is read only from the environment: a flag would show it in ps.
func (c *config) securityFlags(fs *flag.FlagSet) {
	fs.BoolVar(&c.security.TLS, "kafka-tls", envBool("REGISTRY_KAFKA_TLS", &c.envErrs), "connect to the brokers over TLS (REGISTRY_KAFKA_TLS=true)")
	fs.StringVar(&c.security.CAFile, "kafka-ca", os.Getenv("REGISTRY_KAFKA_TLS_CA"), "PEM file of CAs to trust for the brokers' certificates; implies TLS (REGISTRY_KAFKA_TLS_CA)")
	fs.StringVar(&c.security.ServerName, "kafka-tls-server-name", os.Getenv("REGISTRY_KAFKA_TLS_SERVER_NAME"), "name to verify in the brokers' certificates (REGISTRY_KAFKA_TLS_SERVER_NAME)")
	fs.StringVar(&c.security.SASLMechanism, "kafka-sasl", os.Getenv("REGISTRY_KAFKA_SASL_MECHANISM"), "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (REGISTRY_KAFKA_SASL_MECHANISM)")
	fs.StringVar(&c.security.SASLUser, "kafka-user", os.Getenv("REGISTRY_KAFKA_SASL_USERNAME"), "SASL user name (REGISTRY_KAFKA_SASL_USERNAME); the password comes from REGISTRY_KAFKA_SASL_PASSWORD")
	c.security.SASLPassword = os.Getenv("REGISTRY_KAFKA_SASL_PASSWORD")
}

// flagSet declares the flags named in want, with environment fallbacks.
func flagSet(name string, c *config, stderr io.Writer, want ...string) *flag.FlagSet {
	fs := flag.NewFlagSet("registry "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	decl := map[string]func(){
		"brokers": func() {
			fs.StringVar(&c.brokers, "brokers", envOr("REGISTRY_KAFKA_BROKERS", "127.0.0.1:9092"), "Kafka seed brokers, comma-separated (REGISTRY_KAFKA_BROKERS)")
			c.securityFlags(fs)
		},
		"database": func() {
			help := "PostgreSQL URL; empty uses the PG* variables (DATABASE_URL)"
			if name == "dev" {
				help = "PostgreSQL URL of an existing server; empty starts an embedded one in --data (DATABASE_URL)"
			}
			fs.StringVar(&c.databaseURL, "database", os.Getenv("DATABASE_URL"), help)
		},
		"http": func() {
			fs.StringVar(&c.httpAddr, "http", envOr("REGISTRY_HTTP_ADDR", "127.0.0.1:8080"), "HTTP API listen address (REGISTRY_HTTP_ADDR)")
		},
		"partitions": func() {
			// dev runs one projector, which decides all partitions in one
			// transaction per poll: more partitions buy it no parallelism,
			// and its embedded broker fsyncs each partition's batch on its
			// own, so each one costs throughput (docs/benchmarks.md).
			def := 12
			if name == "dev" {
				def = 1
			}
			fs.IntVar(&c.partitions, "partitions", c.envInt("REGISTRY_PARTITIONS", def), "partitions for claims and registrations when creating them; can never change once names exist (REGISTRY_PARTITIONS)")
		},
		"replication": func() {
			fs.IntVar(&c.replication, "replication", c.envInt("REGISTRY_REPLICATION_FACTOR", -1), "replication factor when creating topics; -1 uses the broker default (REGISTRY_REPLICATION_FACTOR)")
		},
		"group": func() {
			fs.StringVar(&c.group, "group", envOr("REGISTRY_PROJECTOR_GROUP", projector.Config{}.WithDefaults().Group), "projector consumer group (REGISTRY_PROJECTOR_GROUP)")
		},
		"max-waiters": func() {
			fs.IntVar(&c.maxWaiters, "max-waiters", c.envInt("REGISTRY_MAX_WAITERS", registrations.ReaderConfig{}.WithDefaults().MaxWaiters), "requests that may wait for a decision at once; more get 503 (REGISTRY_MAX_WAITERS)")
		},
		"db-conns": func() {
			fs.IntVar(&c.dbConns, "db-conns", c.envInt("REGISTRY_DB_MAX_CONNS", 20), "PostgreSQL pool size per process (REGISTRY_DB_MAX_CONNS)")
		},
		"data": func() {
			fs.StringVar(&c.dataDir, "data", "./.registry", "directory for the embedded broker's and PostgreSQL's data")
		},
		"postgres": func() {
			fs.Func("postgres", "server binaries for the private PostgreSQL: system, download (the pinned build, cached after the first run) or auto, the machine's if it has any (REGISTRY_POSTGRES; default auto)", func(s string) error {
				var err error
				c.postgres.Source, err = pglaunch.ParseSource(s)
				return err
			})
			c.postgres.Source = pglaunch.Source(os.Getenv("REGISTRY_POSTGRES")) // checked in parse
			fs.StringVar(&c.postgres.Mirror, "postgres-mirror", os.Getenv("REGISTRY_POSTGRES_MIRROR"), "Maven repository to download the pinned PostgreSQL build from; empty is Maven Central (REGISTRY_POSTGRES_MIRROR)")
			fs.StringVar(&c.postgres.CacheDir, "postgres-cache", os.Getenv("REGISTRY_POSTGRES_CACHE"), "directory caching the downloaded PostgreSQL build; empty is the user's cache directory (REGISTRY_POSTGRES_CACHE)")
		},
		"pprof": func() {
			fs.StringVar(&c.pprofAddr, "pprof", os.Getenv("REGISTRY_PPROF_ADDR"), "address serving Go's /debug/pprof/ profiles; empty serves none (REGISTRY_PPROF_ADDR)")
		},
		"session-timeout": func() {
			fs.DurationVar(&c.session, "session-timeout", c.envDuration("REGISTRY_SESSION_TIMEOUT", projector.Config{}.WithDefaults().SessionTimeout),
				"how long the group waits for a silent projector before moving its partitions (REGISTRY_SESSION_TIMEOUT)")
		},
		"hold": func() {
			fs.DurationVar(&c.hold, "hold", c.envDuration("REGISTRY_HOLD_PERIOD", claims.DefaultHoldPeriod),
				"how long a released or renamed-away name stays held for its former holder; 0 means no hold (REGISTRY_HOLD_PERIOD)")
		},
		"policy-version": func() {
			fs.IntVar(&c.policy, "policy-version", c.envInt("REGISTRY_POLICY_VERSION", 0),
				"username policy version a NEW database starts under (0: the latest); refused for a database recorded under another version; an existing registry moves with registry policy upgrade (REGISTRY_POLICY_VERSION)")
		},
		"tokens":    func() { c.auth.tokenFlags(fs, name == "serve", &c.envErrs) },
		"listeners": func() { c.auth.listenerFlags(fs) },
		"admin-key": func() { c.auth.adminKeyFlag(fs) },
		"metrics": func() {
			fs.StringVar(&c.metricsAddr, "metrics", envOr("REGISTRY_METRICS_ADDR", "127.0.0.1:9091"),
				"address serving the projector's GET /metrics; empty serves none (REGISTRY_METRICS_ADDR)")
		},
	}
	for _, w := range want {
		decl[w]()
	}
	return fs
}

func parse(fs *flag.FlagSet, args []string, c *config) error {
	if err := errors.Join(c.envErrs...); err != nil {
		return err
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errUsage
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	c.auth.noteExplicit(fs)
	if fs.Lookup("partitions") != nil && (c.partitions < 1 || c.partitions > 10000) {
		return fmt.Errorf("--partitions must be between 1 and 10000, got %d", c.partitions)
	}
	if fs.Lookup("postgres") != nil {
		src, err := pglaunch.ParseSource(string(c.postgres.Source))
		if err != nil {
			return fmt.Errorf("REGISTRY_POSTGRES: %w", err)
		}
		c.postgres.Source = src
	}
	if fs.Lookup("max-waiters") != nil && c.maxWaiters < 1 {
		return fmt.Errorf("--max-waiters must be at least 1, got %d", c.maxWaiters)
	}
	return nil
}

func (c *config) kafkaOptions(log *slog.Logger) ([]kgo.Opt, error) {
	brokers := kafka.ParseBrokers(c.brokers)
	if len(brokers) == 0 {
		return nil, errors.New("no Kafka brokers: set --brokers or REGISTRY_KAFKA_BROKERS")
	}
	sec, err := c.security.Options()
	if err != nil {
		return nil, fmt.Errorf("Kafka security settings: %w", err)
	}
	return append(kafka.ClientOptions(brokers, log), sec...), nil
}
