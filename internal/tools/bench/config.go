package bench

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"
)

// Config configures a run. The zero value is a closed loop of 16 clients
// for 10s against http://127.0.0.1:8080, with no warm-up, no hot names and
// no retries; `registry-bench bench` sets its own flag defaults on top.
type Config struct {
	// URL is the API's base URL. Defaults to http://127.0.0.1:8080.
	URL string
	// Token is the bearer token sent with every claim (a caller with the
	// claim scope); empty sends none, for an open API.
	Token string
	// Clients is the number of closed-loop clients, each sending its next
	// claim when the previous one is answered. Ignored when Rate is set.
	// Defaults to 16.
	Clients int
	// Rate, when above zero, runs an open loop instead: claims are sent at
	// this many per second whatever the answers, and latency counts from
	// the moment each claim was due, so queueing shows.
	Rate float64
	// Duration is the measured part of the run. Defaults to 10s.
	Duration time.Duration
	// Warmup runs before Duration; its answers are checked but not counted
	// in the statistics. Zero means none.
	Warmup time.Duration
	// Hot is the share of new claims (0 to 1) that go to HotNames names,
	// so they collide; the rest ask for names nobody else asks for.
	Hot float64
	// HotNames is the number of hot names. Defaults to 100.
	HotNames int
	// Retry is the share of claims (0 to 1, below 1) that repeat a recent
	// claim: same request_id, same payload.
	Retry float64
	// Wait is sent as ?wait=. Defaults to 5s.
	Wait time.Duration
	// Seed fixes the workload. Zero picks one from the clock; the report
	// says which, so a run can be repeated.
	Seed uint64
	// MaxOutstanding caps the open loop's unanswered claims; a claim due
	// while the cap is reached is not sent and counts as a "not_sent"
	// error. Defaults to 20000.
	MaxOutstanding int
	// Conns caps the HTTP connections to the server. Defaults to Clients
	// in a closed loop and 1024 in an open loop; claims beyond it wait in
	// the client, and in an open loop that wait is part of the latency.
	Conns int
	// H2C sends the claims over cleartext HTTP/2 (prior knowledge), many
	// at once on each connection, instead of HTTP/1.1.
	H2C bool
	// Timeout bounds each request. Defaults to Wait plus 15s, past the
	// registry's own 10s limit for writing a claim.
	Timeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

const (
	defaultURL            = "http://127.0.0.1:8080"
	defaultMaxOutstanding = 20000
	openLoopConns         = 1024
)

// WithDefaults returns cfg with every unset field that has a default set
// to it: the one place the defaults are written (the commands' flags show
// them from here). Rate, Warmup, Hot and Retry have none: 0 is a setting.
func (cfg Config) WithDefaults() Config {
	cfg.URL = cmp.Or(cfg.URL, defaultURL)
	cfg.Clients = cmp.Or(cfg.Clients, 16)
	cfg.Duration = cmp.Or(cfg.Duration, 10*time.Second)
	cfg.HotNames = cmp.Or(cfg.HotNames, 100)
	cfg.Wait = cmp.Or(cfg.Wait, 5*time.Second)
	cfg.MaxOutstanding = cmp.Or(cfg.MaxOutstanding, defaultMaxOutstanding)
	if cfg.Conns == 0 {
		cfg.Conns = cfg.Clients
		if cfg.Rate > 0 {
			cfg.Conns = openLoopConns
		}
	}
	cfg.Timeout = cmp.Or(cfg.Timeout, cfg.Wait+15*time.Second)
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	return cfg
}

func (cfg Config) check() error {
	u, err := url.Parse(cfg.URL)
	var errs []error
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("URL %q is not an http:// or https:// URL", cfg.URL))
	}
	if cfg.Clients < 1 || cfg.Rate < 0 || cfg.Duration < 0 || cfg.Warmup < 0 || cfg.Wait < 0 {
		errs = append(errs, errors.New("clients must be at least 1; rate, duration, warm-up and wait must not be negative"))
	}
	if cfg.Hot < 0 || cfg.Hot > 1 || cfg.Retry < 0 || cfg.Retry >= 1 {
		errs = append(errs, errors.New("the hot share must be between 0 and 1, the retry share at least 0 and below 1"))
	}
	if cfg.HotNames < 1 || cfg.MaxOutstanding < 1 || cfg.Conns < 1 {
		errs = append(errs, errors.New("hot names, outstanding claims and connections must be at least 1"))
	}
	return errors.Join(errs...)
}

// mode names the loop for the report.
func (cfg Config) mode() string {
	if cfg.Rate > 0 {
		return "open"
	}
	return "closed"
}

// httpClient keeps connections alive (a new TCP connection per claim would
// measure the kernel, not the server) and ignores proxy variables, which
// would otherwise route a benchmark through whatever the shell points at.
func (cfg Config) httpClient() *http.Client {
	tr := &http.Transport{
		Proxy:               nil,
		MaxIdleConns:        cfg.Conns,
		MaxIdleConnsPerHost: cfg.Conns,
		MaxConnsPerHost:     cfg.Conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	if cfg.H2C {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	return &http.Client{Transport: tr, Timeout: cfg.Timeout}
}
