package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/internal/kafka"
	"github.com/usernameregistry/registry/internal/pglaunch"
)

// Common holds the settings both commands take. A command's own config
// embeds it and declares the ones it uses with Declare.
type Common struct {
	Env

	Brokers     string            // REGISTRY_KAFKA_BROKERS
	Security    kafka.Security    // REGISTRY_KAFKA_TLS*, REGISTRY_KAFKA_SASL_*
	Partitions  int               // REGISTRY_PARTITIONS
	Replication int               // REGISTRY_REPLICATION_FACTOR
	DBConns     int               // REGISTRY_DB_MAX_CONNS
	Postgres    pglaunch.Binaries // REGISTRY_POSTGRES*
	PprofAddr   string            // REGISTRY_PPROF_ADDR
}

// CommonFlags are the names Declare knows.
var CommonFlags = []string{"brokers", "partitions", "replication", "db-conns", "postgres", "pprof"}

// Declare declares on fs the common setting named want (one of
// CommonFlags) for subcommand cmd, with its environment fallback; it
// reports false for any other name. "brokers" declares the Kafka security
// flags too; "postgres" the mirror and cache flags.
func (c *Common) Declare(fs *flag.FlagSet, cmd, want string) bool {
	switch want {
	case "brokers":
		fs.StringVar(&c.Brokers, "brokers", c.Or("REGISTRY_KAFKA_BROKERS", "127.0.0.1:9092"), "Kafka seed brokers, comma-separated (REGISTRY_KAFKA_BROKERS)")
		c.securityFlags(fs)
	case "partitions":
		// dev runs one projector, which decides all partitions in one
		// transaction per poll: more partitions buy it no parallelism,
		// and its embedded broker fsyncs each partition's batch on its
		// own, so each one costs throughput (docs/benchmarks.md).
		def := 12
		if cmd == "dev" {
			def = 1
		}
		fs.IntVar(&c.Partitions, "partitions", c.Int("REGISTRY_PARTITIONS", def), "partitions for claims and registrations when creating them; can never change once names exist (REGISTRY_PARTITIONS)")
	case "replication":
		fs.IntVar(&c.Replication, "replication", c.Int("REGISTRY_REPLICATION_FACTOR", -1), "replication factor when creating topics; -1 uses the broker default (REGISTRY_REPLICATION_FACTOR)")
	case "db-conns":
		fs.IntVar(&c.DBConns, "db-conns", c.Int("REGISTRY_DB_MAX_CONNS", 20), "PostgreSQL pool size per process (REGISTRY_DB_MAX_CONNS)")
	case "postgres":
		fs.Func("postgres", "server binaries for the private PostgreSQL: system, download (the pinned build, cached after the first run) or auto, the machine's if it has any (REGISTRY_POSTGRES; default auto)", func(s string) error {
			var err error
			c.Postgres.Source, err = pglaunch.ParseSource(s)
			return err
		})
		c.Postgres.Source = pglaunch.Source(os.Getenv("REGISTRY_POSTGRES")) // checked in Check
		fs.StringVar(&c.Postgres.Mirror, "postgres-mirror", os.Getenv("REGISTRY_POSTGRES_MIRROR"), "Maven repository to download the pinned PostgreSQL build from; empty is Maven Central (REGISTRY_POSTGRES_MIRROR)")
		fs.StringVar(&c.Postgres.CacheDir, "postgres-cache", os.Getenv("REGISTRY_POSTGRES_CACHE"), "directory caching the downloaded PostgreSQL build; empty is the user's cache directory (REGISTRY_POSTGRES_CACHE)")
	case "pprof":
		fs.StringVar(&c.PprofAddr, "pprof", os.Getenv("REGISTRY_PPROF_ADDR"), "address serving Go's /debug/pprof/ profiles; empty serves none (REGISTRY_PPROF_ADDR)")
	default:
		return false
	}
	return true
}

// securityFlags declares how to reach a secured Kafka cluster. The SASL
// password is read only from the environment: a flag would show it in ps.
func (c *Common) securityFlags(fs *flag.FlagSet) {
	fs.BoolVar(&c.Security.TLS, "kafka-tls", c.Bool("REGISTRY_KAFKA_TLS"), "connect to the brokers over TLS (REGISTRY_KAFKA_TLS=true)")
	fs.StringVar(&c.Security.CAFile, "kafka-ca", os.Getenv("REGISTRY_KAFKA_TLS_CA"), "PEM file of CAs to trust for the brokers' certificates; implies TLS (REGISTRY_KAFKA_TLS_CA)")
	fs.StringVar(&c.Security.ServerName, "kafka-tls-server-name", os.Getenv("REGISTRY_KAFKA_TLS_SERVER_NAME"), "name to verify in the brokers' certificates (REGISTRY_KAFKA_TLS_SERVER_NAME)")
	fs.StringVar(&c.Security.SASLMechanism, "kafka-sasl", os.Getenv("REGISTRY_KAFKA_SASL_MECHANISM"), "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (REGISTRY_KAFKA_SASL_MECHANISM)")
	fs.StringVar(&c.Security.SASLUser, "kafka-user", os.Getenv("REGISTRY_KAFKA_SASL_USERNAME"), "SASL user name (REGISTRY_KAFKA_SASL_USERNAME); the password comes from REGISTRY_KAFKA_SASL_PASSWORD")
	c.Security.SASLPassword = os.Getenv("REGISTRY_KAFKA_SASL_PASSWORD")
}

// ErrUsage is returned by Parse when -h was asked for: the flag package
// has printed the help, and the command ends without error.
var ErrUsage = errors.New("usage")

// Parse parses args into fs after reporting any malformed environment
// variable, refuses positional arguments, and checks the common settings
// fs declares: --partitions in 1..10000, and a known REGISTRY_POSTGRES.
func (c *Common) Parse(fs *flag.FlagSet, args []string) error {
	if err := errors.Join(c.Errs...); err != nil {
		return err
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ErrUsage
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if fs.Lookup("partitions") != nil && (c.Partitions < 1 || c.Partitions > 10000) {
		return fmt.Errorf("--partitions must be between 1 and 10000, got %d", c.Partitions)
	}
	if fs.Lookup("postgres") != nil {
		src, err := pglaunch.ParseSource(string(c.Postgres.Source))
		if err != nil {
			return fmt.Errorf("REGISTRY_POSTGRES: %w", err)
		}
		c.Postgres.Source = src
	}
	return nil
}

// KafkaOptions returns the franz-go options reaching --brokers with the
// security settings; an empty broker list or bad security settings is an
// error.
func (c *Common) KafkaOptions(log *slog.Logger) ([]kgo.Opt, error) {
	brokers := kafka.ParseBrokers(c.Brokers)
	if len(brokers) == 0 {
		return nil, errors.New("no Kafka brokers: set --brokers or REGISTRY_KAFKA_BROKERS")
	}
	sec, err := c.Security.Options()
	if err != nil {
		return nil, fmt.Errorf("Kafka security settings: %w", err)
	}
	return append(kafka.ClientOptions(brokers, log), sec...), nil
}

// EnsureTopics creates the registry's topics if missing (--partitions,
// --replication) and checks them (kafka.EnsureTopics), returning their
// partition count.
func (c *Common) EnsureTopics(ctx context.Context, opts []kgo.Opt) (int32, error) {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	n, err := kafka.EnsureTopics(ctx, kadm.NewClient(cl), int32(c.Partitions), int16(c.Replication))
	if err != nil {
		return 0, fmt.Errorf("checking topics at %s: %w", c.Brokers, err)
	}
	return n, nil
}

// UsageWith returns a flag set's Usage function printing help, then the
// flags.
func UsageWith(fs *flag.FlagSet, help string) func() {
	return func() {
		fmt.Fprint(fs.Output(), help)
		fs.PrintDefaults()
	}
}
