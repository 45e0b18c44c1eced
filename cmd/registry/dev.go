package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/usernameregistry/registry/internal/pprofsrv"

	"github.com/usernameregistry/registry/internal/cli"

	"golang.org/x/sync/errgroup"

	"github.com/usernameregistry/registry/internal/auth"
	"github.com/usernameregistry/registry/internal/kafka"
	"github.com/usernameregistry/registry/internal/pglaunch"
)

func runDev(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	var c config
	fs := flagSet("dev", &c, stdout, "data", "http", "partitions", "max-waiters", "group", "database", "postgres", "pprof", "tokens", "listeners", "admin-key", "hold", "policy-version")
	kafkaAddr := fs.String("kafka-addr", c.Or("REGISTRY_DEV_KAFKA_ADDR", "127.0.0.1:0"),
		"address of the embedded Kafka broker, on 127.0.0.1; port 0 picks a free one (REGISTRY_DEV_KAFKA_ADDR)")
	external := fs.String("kafka-brokers", c.Or("REGISTRY_DEV_KAFKA_BROKERS", ""),
		"Kafka seed brokers to use instead of the embedded broker, comma-separated, plaintext; empty runs the embedded one (REGISTRY_DEV_KAFKA_BROKERS)")
	if err := parse(fs, args, &c); err != nil {
		return err
	}
	kafkaPort, err := loopbackPort(*kafkaAddr)
	if err != nil {
		return fmt.Errorf("--kafka-addr: %w", err)
	}
	if err := c.auth.checkTLS(); err != nil {
		return err
	}
	tokens, err := c.auth.loadTokens()
	if err != nil {
		return err
	}
	if _, err := c.auth.loadAdminKeys(); err != nil {
		return err
	}
	ctx, stopHUP := context.WithCancel(ctx)
	defer stopHUP() // the reload goroutine ends with the command, even when it fails (goleak found it left running)
	reloadOnHUP(ctx, tokens, log)
	if tokens == nil {
		log.Warn("the API is open: no tokens file, so every request is served as caller \"anonymous\"; pass --tokens FILE to require bearer tokens")
	} else {
		log.Info("the API requires bearer tokens", "file", tokens.Path(), "callers", tokens.Callers().Len())
	}
	if err := pprofsrv.Serve(ctx, c.PprofAddr, stdout); err != nil {
		return err
	}
	c.DBConns, c.Replication = 20, -1
	dir, err := filepath.Abs(c.dataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating data directory: %w", err)
	}
	if c.auth.adminKeyFile == "" {
		if c.auth.adminKeyFile, err = devAdminKey(dir); err != nil {
			return err
		}
	}
	var cluster *pglaunch.Cluster
	if c.databaseURL == "" {
		if cluster, err = cli.StartDevPostgres(ctx, dir, c.Postgres, log); err != nil {
			return err
		}
		defer cli.StopDevPostgres(cluster, log)
		c.databaseURL = cluster.URL(cli.DevDatabase)
	}
	if *external != "" {
		c.Brokers = *external
		log.Info("embedded services up; Kafka is external", "kafka", c.Brokers, "data", dir, "embedded_postgres", cluster != nil)
	} else {
		broker, err := kafka.Embedded(filepath.Join(dir, "kafka"), kafkaPort)
		if err != nil {
			return err
		}
		defer broker.Close()
		c.Brokers = broker.ListenAddrs()[0]
		log.Info("embedded services up", "kafka", c.Brokers, "data", dir, "embedded_postgres", cluster != nil)
	}
	envFile, err := writeEnvFile(dir, &c, "")
	if err != nil {
		return err
	}
	c.listening = func(url string) error { // the API's address, known once it listens
		_, err := writeEnvFile(dir, &c, url)
		return err
	}
	if *external != "" {
		fmt.Fprintf(stdout, "Kafka brokers at %s (--kafka-brokers; no embedded broker)\n", c.Brokers)
	} else {
		fmt.Fprintf(stdout, "embedded Kafka broker at %s\n", c.Brokers)
	}
	fmt.Fprintf(stdout, "connection settings for a shell: . %s\n", envFile)
	return runDevProcesses(ctx, &c, tokens, cluster, stdout, log)
}

// loopbackPort reads a --kafka-addr: host:port with a loopback host (the
// embedded broker listens on 127.0.0.1 only), or a bare port.
func loopbackPort(addr string) (int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		host, port = "127.0.0.1", addr
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return 0, fmt.Errorf("%q: the embedded broker listens on 127.0.0.1 only", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return 0, fmt.Errorf("%q: not a port", addr)
	}
	return n, nil
}

// envFileName is the file in the data directory holding dev's connection
// settings, for `. .registry/registry.env` in a shell.
const envFileName = "registry.env"

// writeEnvFile writes the broker address and database URL dev uses, and
// apiURL (the API's base URL; empty before it listens) as REGISTRY_URL,
// as shell variable assignments the registry's own commands and the
// clients under clients/ read, so that a shell that sources it can run
// `registry rejections`, kcat or a client against the running dev. It
// replaces the file by a rename, so a reader never sees half of it.
func writeEnvFile(dir string, c *config, apiURL string) (string, error) {
	path := filepath.Join(dir, envFileName)
	body := fmt.Sprintf("# Written by `registry dev` at each start: . %s\nexport REGISTRY_KAFKA_BROKERS=%s\nexport DATABASE_URL=%s\n",
		path, shellQuote(c.Brokers), shellQuote(c.databaseURL))
	if apiURL != "" {
		body += fmt.Sprintf("export REGISTRY_URL=%s\n", shellQuote(apiURL))
	}
	if c.auth.adminKeyFile != "" { // registry policy upgrade signs its records with it
		abs, err := filepath.Abs(c.auth.adminKeyFile)
		if err != nil {
			return "", err
		}
		body += fmt.Sprintf("export REGISTRY_ADMIN_KEY_FILE=%s\n", shellQuote(abs))
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
		return "", fmt.Errorf("writing connection settings: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("writing connection settings: %w", err)
	}
	return path, nil
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func runDevProcesses(ctx context.Context, c *config, tokens *auth.Store, cluster *pglaunch.Cluster, stdout io.Writer, log *slog.Logger) error {
	opts, pool, partitions, err := connect(ctx, c, log)
	if err != nil {
		return err
	}
	defer pool.Close()
	reg := newRegistry() // one process: the API's /metrics shows the projector's too
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return runProjector(gctx, c, opts, pool, partitions, reg, log) })
	g.Go(func() error { return serveAPI(gctx, c, tokens, opts, pool, reg, stdout, log) })
	g.Go(func() error {
		if cluster == nil {
			return nil // an external database: its health is its operator's
		}
		select {
		case <-cluster.Done():
			return errors.New("the embedded PostgreSQL server exited unexpectedly; see its log in the data directory")
		case <-gctx.Done():
			return nil
		}
	})
	return g.Wait()
}

// devAdminKey returns the admin key file dev uses when none is given: one
// key made on first start and kept in the data directory, so the API node
// can sign administrative commands and the projector verify them across
// restarts.
func devAdminKey(dir string) (string, error) {
	path := filepath.Join(dir, "admin.key")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return "", fmt.Errorf("making the dev admin key: %w", err)
	}
	if err := os.WriteFile(path, []byte("dev "+hex.EncodeToString(secret)+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing the dev admin key: %w", err)
	}
	return path, nil
}
