// Package cli is what the project's two commands, cmd/registry and
// cmd/registry-bench, share: reading settings from flags whose defaults
// come from environment variables, the settings both take (brokers and
// their security, partitions, replication, the pool size, PostgreSQL
// binaries, pprof), subcommand dispatch and logging, and the private
// PostgreSQL of `registry dev`. One copy, so a fix to one binary's
// parsing (REGISTRY_KAFKA_TLS=yes refused rather than read as false) is a
// fix to both.
//
// Environment variables are read in cmd and here only: the packages below
// take everything as configuration.
package cli

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

// Env reads environment variables as flag defaults. A malformed value is
// recorded in Errs, and Parse returns them, so a typo is an error rather
// than a silent default.
type Env struct {
	Errs []error
}

// Or returns the variable key, or def when it is unset or empty.
func (e *Env) Or(key, def string) string {
	if v, ok := os.LookupEnv(key); ok && v != "" {
		return v
	}
	return def
}

// Int reads a whole number; unset or empty is def.
func (e *Env) Int(key string, def int) int {
	s := os.Getenv(key)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		e.Errs = append(e.Errs, fmt.Errorf("%s=%q is not a whole number", key, s))
		return def
	}
	return v
}

// Bool reads a true/false variable the way strconv.ParseBool does (1, t,
// true, TRUE, 0, f, false, …); unset or empty is false, and any other
// value is an error: a REGISTRY_KAFKA_TLS=yes that silently meant "no"
// would send the SASL password in cleartext.
func (e *Env) Bool(key string) bool {
	s := os.Getenv(key)
	if s == "" {
		return false
	}
	v, err := strconv.ParseBool(s)
	if err != nil {
		e.Errs = append(e.Errs, fmt.Errorf("%s=%q is neither true nor false", key, s))
		return false
	}
	return v
}

// Duration reads a Go duration ("45s", "1h30m"); unset or empty is def.
func (e *Env) Duration(key string, def time.Duration) time.Duration {
	s := os.Getenv(key)
	if s == "" {
		return def
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		e.Errs = append(e.Errs, fmt.Errorf("%s=%q is not a duration such as 45s", key, s))
		return def
	}
	return v
}
