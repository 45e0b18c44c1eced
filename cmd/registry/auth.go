package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/usernameregistry/registry/internal/cli"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/auth"
)

// authConfig is how an API node authenticates its callers and where it
// serves its operator pages.
type authConfig struct {
	tokensFile     string // REGISTRY_TOKENS_FILE
	insecureNoAuth bool   // REGISTRY_INSECURE_NO_AUTH, serve only
	opsAddr        string // REGISTRY_OPS_ADDR
	opsExplicit    bool   // opsAddr was given, not the default: failing to listen there is fatal
	tlsCert        string // REGISTRY_TLS_CERT
	tlsKey         string // REGISTRY_TLS_KEY
	adminKeyFile   string // REGISTRY_ADMIN_KEY_FILE
}

func (a *authConfig) tokenFlags(fs *flag.FlagSet, serve bool, env *cli.Env) {
	fs.StringVar(&a.tokensFile, "tokens", os.Getenv("REGISTRY_TOKENS_FILE"),
		"file of callers, one a line: NAME SCOPES SHA256HEX; reloaded on SIGHUP (REGISTRY_TOKENS_FILE)")
	if serve {
		fs.BoolVar(&a.insecureNoAuth, "insecure-no-auth", env.Bool("REGISTRY_INSECURE_NO_AUTH"),
			"serve the API to anyone, without --tokens: for tests only (REGISTRY_INSECURE_NO_AUTH=true)")
	}
}

func (a *authConfig) listenerFlags(fs *flag.FlagSet, env *cli.Env) {
	fs.StringVar(&a.opsAddr, "ops-addr", env.Or("REGISTRY_OPS_ADDR", "127.0.0.1:9090"),
		"address serving the operator pages, GET /ui and GET /metrics; no authentication, keep it private; empty serves none (REGISTRY_OPS_ADDR)")
	fs.StringVar(&a.tlsCert, "tls-cert", os.Getenv("REGISTRY_TLS_CERT"), "PEM certificate chain: serve the API over HTTPS; needs --tls-key (REGISTRY_TLS_CERT)")
	fs.StringVar(&a.tlsKey, "tls-key", os.Getenv("REGISTRY_TLS_KEY"), "PEM private key for --tls-cert (REGISTRY_TLS_KEY)")
}

func (a *authConfig) adminKeyFlag(fs *flag.FlagSet) {
	fs.StringVar(&a.adminKeyFile, "admin-key-file", os.Getenv("REGISTRY_ADMIN_KEY_FILE"),
		"file of HMAC keys (KEYID HEX a line, the first signs) proving administrative commands in claims came from an API node; the same file on API nodes and projectors (REGISTRY_ADMIN_KEY_FILE)")
}

// noteExplicit records whether the operator address was chosen by the
// operator; call it after parsing.
func (a *authConfig) noteExplicit(fs *flag.FlagSet) {
	a.opsExplicit = os.Getenv("REGISTRY_OPS_ADDR") != ""
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "ops-addr" {
			a.opsExplicit = true
		}
	})
}

// errNoTokens is what serve says when it would start open by accident.
var errNoTokens = errors.New("registry serve needs --tokens FILE (REGISTRY_TOKENS_FILE) naming the callers allowed to use the API " +
	"(see docs/deployment.md); to serve without authentication, for tests only, pass --insecure-no-auth (REGISTRY_INSECURE_NO_AUTH=true)")

// checkServe is serve's check before it connects to anything.
func (a *authConfig) checkServe() error {
	switch {
	case a.tokensFile == "" && !a.insecureNoAuth:
		return errNoTokens
	case a.tokensFile != "" && a.insecureNoAuth:
		return errors.New("--tokens and --insecure-no-auth contradict each other: give one")
	}
	return a.checkTLS()
}

func (a *authConfig) checkTLS() error {
	if (a.tlsCert == "") != (a.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together: give both or neither")
	}
	return nil
}

// loadTokens reads the tokens file, if any; a malformed line stops the
// program with an error naming the file and the line.
func (a *authConfig) loadTokens() (*auth.Store, error) {
	if a.tokensFile == "" {
		return nil, nil
	}
	return auth.NewStore(a.tokensFile)
}

// loadAdminKeys reads the admin key file, if any.
func (a *authConfig) loadAdminKeys() (*events.AdminKeys, error) {
	if a.adminKeyFile == "" {
		return nil, nil
	}
	f, err := os.Open(a.adminKeyFile)
	if err != nil {
		return nil, fmt.Errorf("reading admin key file: %w", err)
	}
	defer f.Close()
	k, err := events.ParseAdminKeys(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", a.adminKeyFile, err)
	}
	return k, nil
}

// reloadOnHUP reloads store on every SIGHUP until ctx ends. A reload swaps
// the callers atomically: requests in flight finish with the set they
// started with, and a file that does not parse leaves the old set in
// force. With no store, SIGHUP is logged and ignored rather than ending
// the process.
func reloadOnHUP(ctx context.Context, store *auth.Store, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			}
			if store == nil {
				log.Warn("SIGHUP ignored: no tokens file to reload")
				continue
			}
			if err := store.Reload(); err != nil {
				log.Error("tokens file not reloaded; the callers in force stay", "error", err)
				continue
			}
			log.Info("tokens file reloaded", "file", store.Path(), "callers", store.Callers().Len())
		}
	}()
}
