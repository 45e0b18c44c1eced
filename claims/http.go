package claims

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/httpwire"
)

// Directory answers the API's read queries. *projector.Store implements it.
type Directory interface {
	Ledger
	// Holder returns who holds canonical, or nil when nobody does.
	Holder(ctx context.Context, canonical string) (*Registration, error)
	// NameState says whether the name with partition key key is in a hold
	// or reserved at runtime (for a name nobody holds).
	NameState(ctx context.Context, key string) (NameState, error)
}

// NameState is what GET /v1/usernames answers for a name nobody holds.
type NameState struct {
	HeldCanonical string     // canonical form of the held name; empty when no hold
	HeldUntil     *time.Time // when the hold ends
	Reserved      bool       // reserved at runtime
}

// HandlerConfig configures the HTTP API.
type HandlerConfig struct {
	// Client claims names. Required.
	Client *Client
	// Directory serves GET lookups. Required.
	Directory Directory
	// Ready reports whether the API can serve claims (broker and database
	// reachable, decisions reader positioned). Required.
	Ready func(ctx context.Context) error
	// DefaultWait is how long POST /v1/claims waits for a decision when the
	// request does not say. Defaults to 5s.
	DefaultWait time.Duration
	// MaxWait caps ?wait=. Defaults to 30s.
	MaxWait time.Duration
	// Metrics records HTTP latency, 202s and 503s; use the Client's so
	// one /metrics shows both. Defaults to unregistered metrics.
	Metrics *Metrics
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

type api struct {
	cfg HandlerConfig
	log *slog.Logger
}

// WithDefaults returns cfg with every unset field that has a default set
// to it: the one place the defaults are written.
func (cfg HandlerConfig) WithDefaults() HandlerConfig {
	cfg.DefaultWait = cmpDuration(cfg.DefaultWait, 5*time.Second)
	cfg.MaxWait = cmpDuration(cfg.MaxWait, 30*time.Second)
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	return cfg
}

// NewHandler returns the registry's HTTP API.
func NewHandler(cfg HandlerConfig) (http.Handler, error) {
	if cfg.Client == nil || cfg.Directory == nil || cfg.Ready == nil {
		return nil, errors.New("claims: HandlerConfig needs Client, Directory and Ready")
	}
	cfg = cfg.WithDefaults()
	a := &api{cfg: cfg, log: cfg.Logger.With("component", "api")}
	mux := http.NewServeMux()
	routes := map[string]http.HandlerFunc{
		"POST /v1/claims":              a.postClaim,
		"GET /v1/claims/{request_id}":  a.getClaim,
		"GET /v1/usernames/{username}": a.getUsername,
		"GET /healthz":                 healthz,
		"GET /readyz":                  a.readyz,

		"POST /v1/releases":                    a.postRelease,
		"GET /v1/releases/{request_id}":        a.getDecision,
		"POST /v1/renames":                     a.postRename,
		"GET /v1/renames/{request_id}":         a.getDecision,
		"PUT /v1/admin/reserved/{username}":    a.putReserved,
		"DELETE /v1/admin/reserved/{username}": a.deleteReserved,
		"POST /v1/admin/transfers":             a.postTransfer,
		"GET /v1/admin/transfers/{request_id}": a.getDecision,
		"GET /v1/admin/requests/{request_id}":  a.getDecision,
	}
	for pattern, h := range routes {
		mux.Handle(pattern, cfg.Metrics.InstrumentHTTP(pattern, withBodyType(pattern, h)))
	}
	return mux, nil
}

func healthz(w http.ResponseWriter, _ *http.Request) {
	httpwire.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func cmpDuration(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func (a *api) postClaim(w http.ResponseWriter, r *http.Request) {
	wait, err := a.waitParam(r)
	if err != nil {
		writeInvalid(w, events.ReasonInvalid, err.Error())
		return
	}
	body, status, err := httpwire.ReadClaim(w, r)
	if err != nil {
		httpwire.WriteError(w, status, events.ReasonInvalid, err.Error())
		return
	}
	req := Request{RequestID: body.RequestID, UserID: body.UserID, Username: body.Username, Caller: CallerFrom(r.Context())}
	// ?wait bounds the wait for a decision, not the write: a claim is
	// written (or refused) whatever the wait, so a short wait never turns
	// a slow write into a 503.
	sub, err := a.cfg.Client.Submit(r.Context(), req)
	if err != nil {
		a.claimError(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	a.writeResult(w, sub.Await(ctx))
}

func (a *api) waitParam(r *http.Request) (time.Duration, error) {
	return httpwire.ParseWait(r, a.cfg.DefaultWait, a.cfg.MaxWait)
}

func (a *api) claimError(w http.ResponseWriter, err error) {
	// Only ErrInvalid's text reaches the caller: the others wrap driver and
	// broker errors, which name hosts, users and ports. Those go to the log.
	switch {
	case errors.Is(err, ErrInvalid):
		writeInvalid(w, events.ReasonInvalid, err.Error())
	case errors.Is(err, ErrOverloaded):
		a.cfg.Metrics.overloadRefusals.Inc()
		w.Header().Set("Retry-After", "1")
		httpwire.WriteError(w, http.StatusServiceUnavailable, "overloaded", "too many claims are waiting for a decision on this node; retry shortly")
	case errors.Is(err, ErrLedgerUnavailable):
		a.log.Error("claim failed: database unreachable", "error", err)
		w.Header().Set("Retry-After", "2")
		httpwire.WriteError(w, http.StatusServiceUnavailable, "unavailable", "the registry's database did not answer while looking up this request_id; nothing was written: retry with the same request_id")
	case errors.Is(err, ErrUnavailable):
		a.log.Error("claim failed: claims topic unreachable", "error", err)
		w.Header().Set("Retry-After", "2")
		httpwire.WriteError(w, http.StatusServiceUnavailable, "unavailable", "the claim could not be written to the claims topic in time; it may still have been written: retry with the same request_id")
	default:
		a.log.Error("claim failed", "error", err)
		w.Header().Set("Retry-After", "2")
		httpwire.WriteError(w, http.StatusServiceUnavailable, "unavailable", "the registry could not take the claim; retry with the same request_id")
	}
}

func (a *api) writeResult(w http.ResponseWriter, res Result) {
	a.writeResultAt(w, res, "/v1/claims/")
}

// writeResultAt answers a command's result; an undecided one gets 202 with
// the status URL under statusPath.
func (a *api) writeResultAt(w http.ResponseWriter, res Result, statusPath string) {
	if res.Decision == nil || !events.Final(res.Decision.Outcome) {
		a.cfg.Metrics.waitTimeouts.Inc()
		w.Header().Set("Location", statusPath+res.RequestID)
		httpwire.WriteJSON(w, http.StatusAccepted, httpwire.Answer{RequestID: res.RequestID, Status: "pending"})
		return
	}
	status, body := httpwire.AnswerFor(res.Decision)
	if status == http.StatusOK && res.Won {
		status = http.StatusCreated
	}
	httpwire.WriteJSON(w, status, body)
}

func (a *api) getClaim(w http.ResponseWriter, r *http.Request) {
	id, err := uuid.Parse(r.PathValue("request_id"))
	if err != nil {
		writeInvalid(w, events.ReasonInvalid, "request_id in the path is not a UUID")
		return
	}
	d, err := a.cfg.Directory.Decision(r.Context(), id.String())
	if err != nil {
		a.lookupFailed(w, err)
		return
	}
	if d == nil {
		httpwire.WriteJSON(w, http.StatusNotFound, httpwire.Answer{RequestID: id.String(), Status: "unknown"})
		return
	}
	_, body := httpwire.AnswerFor(d)
	httpwire.WriteJSON(w, http.StatusOK, body)
}

func (a *api) getUsername(w http.ResponseWriter, r *http.Request) {
	name, err := Normalize(r.PathValue("username"))
	if err != nil {
		writeInvalid(w, events.ReasonInvalid, err.Error())
		return
	}
	reg, err := a.cfg.Directory.Holder(r.Context(), name.Canonical)
	if err != nil {
		a.lookupFailed(w, err)
		return
	}
	if reg == nil {
		a.nameState(w, r, name)
		return
	}
	httpwire.WriteJSON(w, http.StatusOK, reg)
}

// nameState answers for a name nobody holds: held (by the hold in the
// projection, until its held_until by this server's clock; the decider
// itself compares record timestamps), reserved, or unknown.
func (a *api) nameState(w http.ResponseWriter, r *http.Request, name Username) {
	st, err := a.cfg.Directory.NameState(r.Context(), name.Key)
	if err != nil {
		a.lookupFailed(w, err)
		return
	}
	switch {
	case st.Reserved:
		httpwire.WriteJSON(w, http.StatusOK, httpwire.Answer{Canonical: name.Canonical, Status: "reserved"})
	case st.HeldUntil != nil && time.Now().Before(*st.HeldUntil):
		httpwire.WriteJSON(w, http.StatusOK, httpwire.Answer{Canonical: st.HeldCanonical, Status: "held", HeldUntil: st.HeldUntil})
	default:
		httpwire.WriteJSON(w, http.StatusNotFound, httpwire.Answer{Canonical: name.Canonical, Status: "unknown"})
	}
}

func (a *api) lookupFailed(w http.ResponseWriter, err error) {
	a.log.Error("lookup failed", "error", err)
	w.Header().Set("Retry-After", "2")
	httpwire.WriteError(w, http.StatusServiceUnavailable, "unavailable", "the registry's database did not answer; retry shortly")
}

func (a *api) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := a.cfg.Ready(ctx); err != nil {
		// The error names hosts and users: the log has it, the body says
		// which part is down in words (see ReadyError).
		a.log.Warn("not ready", "error", err)
		detail := "not ready"
		var re *ReadyError
		if errors.As(err, &re) {
			detail = re.Detail
		}
		httpwire.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unready", "detail": detail})
		return
	}
	httpwire.WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func writeInvalid(w http.ResponseWriter, reason, detail string) {
	httpwire.WriteError(w, http.StatusUnprocessableEntity, reason, detail)
}
