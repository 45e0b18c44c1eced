package claims

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/usernameregistry/registry/events"
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

// MaxBodyBytes is the largest POST body the API reads; larger ones get 413.
const MaxBodyBytes = 64 << 10

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
		mux.Handle(pattern, cfg.Metrics.InstrumentHTTP(pattern, h))
	}
	return mux, nil
}

func healthz(w http.ResponseWriter, _ *http.Request) {
	WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func cmpDuration(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// claimBody is the POST /v1/claims request body.
type claimBody struct {
	Username  *string `json:"username"`
	UserID    string  `json:"user_id"`
	RequestID string  `json:"request_id"`
}

// Answer is every claim response body; empty fields are left out.
type Answer struct {
	RequestID     string `json:"request_id,omitempty"`
	Username      string `json:"username,omitempty"`
	Canonical     string `json:"canonical,omitempty"`
	UserID        string `json:"user_id,omitempty"`
	Status        string `json:"status"`
	Reason        string `json:"reason,omitempty"`
	ConflictsWith string `json:"conflicts_with,omitempty"`
	Detail        string `json:"detail,omitempty"`
	// HeldUntil: for released and renamed, when the hold on the released
	// name ends (absent when the hold period is 0); for a "held"
	// rejection, when the hold that refused it ends. RFC 3339.
	HeldUntil *time.Time `json:"held_until,omitempty"`
	// From and To are a rename's canonical names.
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
}

func (a *api) postClaim(w http.ResponseWriter, r *http.Request) {
	wait, err := a.waitParam(r)
	if err != nil {
		writeInvalid(w, events.ReasonInvalid, err.Error())
		return
	}
	req, status, err := ReadRequest(w, r)
	if err != nil {
		WriteError(w, status, events.ReasonInvalid, err.Error())
		return
	}
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
	return ParseWait(r, a.cfg.DefaultWait, a.cfg.MaxWait)
}

// ParseWait reads ?wait: def when absent, capped at max, an error when it
// is not a non-negative duration.
func ParseWait(r *http.Request, def, max time.Duration) (time.Duration, error) {
	s := r.URL.Query().Get("wait")
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("wait %q is not a duration such as 5s or 500ms", s)
	}
	return min(d, max), nil
}

// ReadRequest decodes a POST /v1/claims body as the API does, returning
// the status code to answer with when it cannot.
func ReadRequest(w http.ResponseWriter, r *http.Request) (Request, int, error) {
	body, status, err := readClaimBody(w, r)
	if err != nil {
		return Request{}, status, err
	}
	return Request{RequestID: body.RequestID, UserID: body.UserID, Username: *body.Username}, 0, nil
}

// readClaimBody decodes the body strictly: unknown fields are refused so a
// misspelt "userid" is an error, not a missing user, and invalid UTF-8 is
// refused before JSON decoding would quietly turn it into U+FFFD.
func readClaimBody(w http.ResponseWriter, r *http.Request) (claimBody, int, error) {
	var body claimBody
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return body, http.StatusRequestEntityTooLarge, fmt.Errorf("request body is larger than %d bytes", MaxBodyBytes)
	case err != nil:
		return body, http.StatusBadRequest, fmt.Errorf("reading request body: %v", err)
	case !utf8.Valid(raw):
		return body, http.StatusUnprocessableEntity, errors.New("request body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	err = dec.Decode(&body)
	switch {
	case err != nil:
		return body, http.StatusUnprocessableEntity, fmt.Errorf("request body is not a valid claim: %v", err)
	case dec.More():
		return body, http.StatusUnprocessableEntity, errors.New("request body holds more than one JSON value")
	case body.Username == nil:
		return body, http.StatusUnprocessableEntity, errors.New("username is required")
	}
	return body, 0, nil
}

func (a *api) claimError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrInvalid):
		writeInvalid(w, events.ReasonInvalid, err.Error())
	case errors.Is(err, ErrOverloaded):
		a.cfg.Metrics.overloadRefusals.Inc()
		w.Header().Set("Retry-After", "1")
		WriteError(w, http.StatusServiceUnavailable, "overloaded", err.Error())
	case errors.Is(err, ErrUnavailable):
		w.Header().Set("Retry-After", "2")
		WriteError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
	default:
		a.log.Error("claim failed", "error", err)
		w.Header().Set("Retry-After", "2")
		WriteError(w, http.StatusServiceUnavailable, "unavailable", "the registry could not take the claim; retry with the same request_id")
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
		WriteJSON(w, http.StatusAccepted, Answer{RequestID: res.RequestID, Status: "pending"})
		return
	}
	status, body := AnswerFor(res.Decision)
	if status == http.StatusOK && res.Won {
		status = http.StatusCreated
	}
	WriteJSON(w, status, body)
}

// AnswerFor maps a decision to its status code and body, as every endpoint
// that shows a decision answers it. A rejection's code and shape come from
// its reason's entry in events.Reasons. A reason this build does not know
// (one a newer projector decided) is answered 500 with the decision's
// request_id, status and reason, and a detail saying so; it is never
// passed off as one of the known answers.
func AnswerFor(d *events.Decision) (int, Answer) {
	body := Answer{RequestID: d.RequestID, Username: d.Username, Canonical: d.Canonical, UserID: d.UserID, Status: d.Outcome, HeldUntil: d.HeldUntil}
	if d.Command == events.CommandRename {
		body.Username, body.Canonical, body.From, body.To = "", "", d.From, d.To
	}
	switch {
	case d.Reason == "" && d.Outcome == events.OutcomeRenamed:
		return http.StatusCreated, body
	case d.Reason == "" && d.Outcome == events.OutcomeRenaming:
		return http.StatusAccepted, Answer{RequestID: d.RequestID, Status: "pending"}
	case d.Reason == "":
		return http.StatusOK, body
	}
	reason, ok := events.LookupReason(d.Reason)
	switch {
	case !ok:
		return http.StatusInternalServerError, Answer{RequestID: d.RequestID, Status: d.Outcome, Reason: d.Reason,
			Detail: fmt.Sprintf("the claim was decided with rejection reason %q, which this API node does not know; upgrade it", d.Reason)}
	case reason.Detail:
		return reason.HTTPStatus, Answer{RequestID: d.RequestID, Status: d.Outcome, Reason: d.Reason, Detail: d.Detail}
	}
	body.Reason = d.Reason
	if reason.ConflictsWith {
		body.ConflictsWith = d.Conflicts
	}
	return reason.HTTPStatus, body
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
		WriteJSON(w, http.StatusNotFound, Answer{RequestID: id.String(), Status: "unknown"})
		return
	}
	_, body := AnswerFor(d)
	WriteJSON(w, http.StatusOK, body)
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
	WriteJSON(w, http.StatusOK, reg)
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
		WriteJSON(w, http.StatusOK, Answer{Canonical: name.Canonical, Status: "reserved"})
	case st.HeldUntil != nil && time.Now().Before(*st.HeldUntil):
		WriteJSON(w, http.StatusOK, Answer{Canonical: st.HeldCanonical, Status: "held", HeldUntil: st.HeldUntil})
	default:
		WriteJSON(w, http.StatusNotFound, Answer{Canonical: name.Canonical, Status: "unknown"})
	}
}

func (a *api) lookupFailed(w http.ResponseWriter, err error) {
	a.log.Error("lookup failed", "error", err)
	w.Header().Set("Retry-After", "2")
	WriteError(w, http.StatusServiceUnavailable, "unavailable", "the database is unreachable")
}

func (a *api) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := a.cfg.Ready(ctx); err != nil {
		WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unready", "detail": err.Error()})
		return
	}
	WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func writeInvalid(w http.ResponseWriter, reason, detail string) {
	WriteError(w, http.StatusUnprocessableEntity, reason, detail)
}

// WriteError writes a rejected request (4xx) or an error (5xx) with the
// reason and a detail for a person.
func WriteError(w http.ResponseWriter, status int, reason, detail string) {
	s := "rejected"
	if status >= 500 {
		s = "error"
	}
	WriteJSON(w, status, Answer{Status: s, Reason: reason, Detail: detail})
}

// WriteJSON writes body as the API's JSON answer: one object and a newline.
func WriteJSON(w http.ResponseWriter, status int, body any) {
	b, err := json.Marshal(body)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"status":"error"}`)
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b) //nolint:errcheck // the client went away; nothing to do
}
