package claims

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/httpwire"
)

// Directory answers the API's read queries. *projector.Store implements it.
type Directory interface {
	Ledger
	// HolderOfKey returns who holds a name with the given key (the
	// username policy's Key), or nil when nobody does.
	HolderOfKey(ctx context.Context, key string) (*Registration, error)
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
	// Partitions is the claims topic's partition count, so that a lookup
	// can say which partition a name's key belongs in. When 0, lookups
	// leave the partition out.
	Partitions int32
	// Upgrading, when set, reports the username policy version an upgrade
	// under way moves the registry to (0 when none; registry policy
	// upgrade records it in PostgreSQL). While one is under way every
	// write is answered 503 policy_upgrading with Retry-After, and when it
	// ends the Client reads the policy version again. It is read at most
	// once a second. Defaults to none.
	Upgrading func(ctx context.Context) (int, error)
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
		"POST /v1/claims":             a.postClaim,
		"GET /v1/claims/{request_id}": a.getClaim,
		"GET /healthz":                healthz,
		"GET /readyz":                 a.readyz,

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
	gate := &upgradeGate{read: cfg.Upgrading, client: cfg.Client, log: a.log}
	for pattern, h := range routes {
		if cfg.Upgrading != nil && !strings.HasPrefix(pattern, "GET ") {
			h = gate.wrap(h)
		}
		mux.Handle(pattern, cfg.Metrics.InstrumentHTTP(pattern, withBodyType(pattern, h)))
	}
	return RawUsernamePaths(cfg.Metrics.InstrumentHTTP(lookupPattern, http.HandlerFunc(a.getUsername)), mux), nil
}

// UsernamesPrefix is the path under which GET looks a username up.
const UsernamesPrefix = "/v1/usernames/"

// lookupPattern labels the lookup in the HTTP metrics.
const lookupPattern = "GET /v1/usernames/{username}"

// RawUsernamePaths sends every request under /v1/usernames/ to lookup and
// the rest to next. ServeMux cleans a path before it routes it, answering
// a redirect for "/v1/usernames/.." or "/v1/usernames/a//b", which would
// take the client away from the name it asked about: every path under the
// prefix is a name (refused by the policy when it is not a valid one), so
// lookup reads it from the raw path itself. Put it in front of any
// ServeMux that serves the API.
func RawUsernamePaths(lookup, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, UsernamesPrefix) && !strings.HasPrefix(r.URL.EscapedPath(), UsernamesPrefix) {
			next.ServeHTTP(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
			return
		}
		lookup.ServeHTTP(w, r)
	})
}

// pathUsername is the name in a lookup's path, percent-decoded once.
func pathUsername(r *http.Request) (string, error) {
	raw := strings.TrimPrefix(r.URL.EscapedPath(), UsernamesPrefix)
	name, err := url.PathUnescape(raw)
	if err != nil {
		return "", errors.New("the username in the path is not validly percent-encoded")
	}
	return name, nil
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
	case errors.Is(err, ErrPolicyUnavailable):
		a.log.Error("claim failed: database unreachable", "error", err)
		w.Header().Set("Retry-After", "2")
		httpwire.WriteError(w, http.StatusServiceUnavailable, "unavailable", "the registry's database did not answer while reading its username policy version; nothing was written: retry")
	case errors.Is(err, ErrLedgerUnavailable):
		a.log.Error("claim failed: database unreachable", "error", err)
		w.Header().Set("Retry-After", "2")
		httpwire.WriteError(w, http.StatusServiceUnavailable, "unavailable", "the registry's database did not answer while looking up this request_id; nothing was written: retry with the same request_id")
	case errors.Is(err, ErrUnavailable) && errors.Is(err, context.Canceled):
		// The caller went away (or the server is stopping) before the
		// broker acknowledged the command: nobody reads this answer, and
		// it is no fault of the registry's. The record may still be
		// written; a retry with the same request_id finds its decision.
		a.log.Info("claim abandoned by its caller before the claims topic acknowledged it", "error", err)
		w.Header().Set("Retry-After", "2")
		httpwire.WriteError(w, http.StatusServiceUnavailable, "unavailable", "the request ended before the claim was acknowledged; it may still have been written: retry with the same request_id")
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

// Availability is the answer of GET /v1/usernames/{name}: what a claim of
// the name by a new user would get right now (docs/usernames.md, "The
// lookup"). Nothing is written.
type Availability struct {
	// Username is, for a held name, the holder's name as typed in the
	// winning claim; otherwise the name as asked.
	Username      string     `json:"username,omitempty"`
	Canonical     string     `json:"canonical,omitempty"`      // the canonical form; empty when invalid
	Key           string     `json:"key,omitempty"`            // the key a claim record must carry; empty when invalid
	Partition     *int32     `json:"partition,omitempty"`      // the claims partition of Key (murmur2); absent when invalid
	PolicyVersion int        `json:"policy_version"`           // the username policy version that answered
	Status        string     `json:"status"`                   // held, available, confusable, reserved or invalid
	Available     bool       `json:"available"`                // whether a new user's claim would win the name
	Reason        string     `json:"reason,omitempty"`         // when not available: the claim's reason (taken, confusable, reserved, held, invalid)
	ConflictsWith string     `json:"conflicts_with,omitempty"` // for held and confusable: the holder's canonical name
	Detail        string     `json:"detail,omitempty"`         // for invalid: why, for a person
	UserID        string     `json:"user_id,omitempty"`        // for held: the holder
	RequestID     string     `json:"request_id,omitempty"`     // for held: the winning claim's request
	RegisteredAt  *time.Time `json:"registered_at,omitempty"`  // for held: the winning claim record's timestamp
	// HeldUntil is, for a name in a hold after a release (reason held),
	// when the hold ends (RFC 3339); only its former holder may claim it
	// before then.
	HeldUntil *time.Time `json:"held_until,omitempty"`
	// HeldUnderPolicy is, for a held name, the username policy version it
	// was won under: older than policy_version when a policy upgrade
	// carried it (docs/usernames.md, "Names held under an older policy").
	HeldUnderPolicy int `json:"held_under_policy,omitempty"`
	// Grandfathered is set when the name's key is held by a grandfathered
	// group: holders a policy upgrade found under one key, who all keep
	// their names, while two or more remain; GrandfatheredWith lists the
	// group's names as typed.
	Grandfathered     bool     `json:"grandfathered,omitempty"`
	GrandfatheredWith []string `json:"grandfathered_with,omitempty"`
}

// describe fills in the name's canonical form, key and partition.
func (a *api) describe(av *Availability, name username.Username) {
	av.Canonical, av.Key = name.Canonical, name.Key
	if a.cfg.Partitions > 0 {
		p := events.Partition([]byte(name.Key), int(a.cfg.Partitions))
		av.Partition = &p
	}
}

// invalidName answers a name the policy refuses, as a claim would be
// refused, and where the name still has a key, names the held name it
// looks like: "orchіd5" (Cyrillic і) is refused as a mixed-script name,
// and looks like a held "orchid5".
//
// A refused name that is itself held (a policy upgrade carried it under
// the canonical form and key Policy.Inspect computes, docs/usernames.md)
// is answered 200 held with its holder, held_under_policy and, when its
// shadow sits in a grandfathered group, grandfathered_with: reason stays
// invalid, which is what a new user's claim of it would get.
func (a *api) invalidName(ctx context.Context, policy *username.Policy, typed string, av Availability, refusal error) (int, Availability, error) {
	av.Status, av.Reason, av.Detail = StatusInvalid, events.ReasonInvalid, refusal.Error()
	var keys []string
	inspected, inspectable := policy.Inspect(typed)
	if inspectable {
		a.describe(&av, inspected)
		keys = append(keys, inspected.Key)
	}
	shown, shownOK := policy.ShownKey(typed)
	if shownOK && shown != av.Key {
		keys = append(keys, shown)
	}
	for i, key := range keys {
		reg, err := a.cfg.Directory.HolderOfKey(ctx, key)
		if err != nil {
			return 0, av, err
		}
		if reg == nil {
			continue
		}
		if i == 0 && inspectable {
			if own := memberWithCanonical(reg, inspected.Canonical); own != nil {
				return a.heldRefused(ctx, av, reg, own, shown, shownOK)
			}
		}
		av.ConflictsWith = reg.Canonical
		av.Detail += fmt.Sprintf("; it also looks like %q, which is held", reg.Canonical)
		break
	}
	return http.StatusUnprocessableEntity, av, nil
}

// memberWithCanonical returns the holder of reg's key (or the member of
// its group) whose canonical form is canonical, or nil.
func memberWithCanonical(reg *Registration, canonical string) *Registration {
	if reg.Canonical == canonical {
		return reg
	}
	for i := range reg.Members {
		if reg.Members[i].Canonical == canonical {
			return &reg.Members[i]
		}
	}
	return nil
}

// heldRefused answers the lookup of a refused name that own holds under
// the key whose holders are reg (see invalidName); the group own is in,
// under that key or as a shadow under the key shown, is listed as
// grandfathered_with.
func (a *api) heldRefused(ctx context.Context, av Availability, reg, own *Registration, shown string, shownOK bool) (int, Availability, error) {
	at := own.RegisteredAt
	av.Status = StatusHeld
	av.Username, av.UserID, av.RequestID, av.RegisteredAt = own.Username, own.UserID, own.RequestID, &at
	av.HeldUnderPolicy, av.ConflictsWith = own.HeldUnderPolicy, own.Canonical
	av.Detail += fmt.Sprintf("; it is held, won under policy version %d, and stays its holder's", own.HeldUnderPolicy)
	groups := []*Registration{reg}
	if shownOK && shown != av.Key {
		reg, err := a.cfg.Directory.HolderOfKey(ctx, shown)
		if err != nil {
			return 0, av, err
		}
		if reg != nil {
			groups = append(groups, reg)
		}
	}
	for _, g := range groups {
		if len(g.Members) < 2 {
			continue
		}
		in := false
		for _, m := range g.Members {
			in = in || (m.Username == own.Username && m.UserID == own.UserID)
		}
		if !in {
			continue
		}
		av.Grandfathered = true
		for _, m := range g.Members {
			av.GrandfatheredWith = append(av.GrandfatheredWith, m.Username)
		}
		break
	}
	return http.StatusOK, av, nil
}

// Lookup statuses, and the codes they are answered with.
const (
	StatusHeld       = "held"       // 200: the holder is in the body, or (reason held) the hold's held_until
	StatusAvailable  = "available"  // 404: no holder; a claim would win it
	StatusConfusable = "confusable" // 409: a name with the same key is held
	StatusReserved   = "reserved"   // 409: on the reserved list
	StatusInvalid    = "invalid"    // 422: the policy refuses the name
)

func (a *api) getUsername(w http.ResponseWriter, r *http.Request) {
	typed, err := pathUsername(r)
	if err != nil {
		av := Availability{Status: StatusInvalid, Reason: events.ReasonInvalid, Detail: err.Error()}
		if p, err := a.cfg.Client.Policy(r.Context()); err == nil {
			av.PolicyVersion = p.Version()
		}
		httpwire.WriteJSON(w, http.StatusUnprocessableEntity, av)
		return
	}
	status, av, err := a.availability(r.Context(), typed)
	if err != nil {
		a.lookupFailed(w, err)
		return
	}
	httpwire.WriteJSON(w, status, av)
}

// availability decides a lookup as decideFresh in package projector would
// decide a claim by a new user: invalid, reserved (by the policy or at
// runtime), held (by a holder, or in a hold after a release), confusable,
// or free.
func (a *api) availability(ctx context.Context, typed string) (int, Availability, error) {
	policy, err := a.cfg.Client.Policy(ctx)
	if err != nil {
		return 0, Availability{}, err
	}
	av := Availability{PolicyVersion: policy.Version()}
	if utf8.ValidString(typed) {
		av.Username = typed
	}
	name, err := policy.Normalize(typed)
	if err != nil {
		return a.invalidName(ctx, policy, typed, av, err)
	}
	a.describe(&av, name)
	if policy.Reserved(name) {
		av.Status, av.Reason = StatusReserved, events.ReasonReserved
		return http.StatusConflict, av, nil
	}
	reg, err := a.cfg.Directory.HolderOfKey(ctx, name.Key)
	if reg != nil && len(reg.Members) > 1 { // a group is listed until one member remains
		av.Grandfathered = true
		for _, m := range reg.Members {
			av.GrandfatheredWith = append(av.GrandfatheredWith, m.Username)
			if m.Canonical == name.Canonical {
				reg = &m
			}
		}
	}
	switch {
	case err != nil:
		return 0, av, err
	case reg == nil:
		return a.unheld(ctx, name, av)
	case reg.Canonical == name.Canonical:
		at := reg.RegisteredAt
		av.Status, av.Reason, av.ConflictsWith = StatusHeld, events.ReasonTaken, reg.Canonical
		av.Username, av.UserID, av.RequestID, av.RegisteredAt = reg.Username, reg.UserID, reg.RequestID, &at
		av.HeldUnderPolicy = reg.HeldUnderPolicy
		return http.StatusOK, av, nil
	default:
		av.Status, av.Reason, av.ConflictsWith = StatusConfusable, events.ReasonConfusable, reg.Canonical
		return http.StatusConflict, av, nil
	}
}

// unheld answers for a name whose key nobody holds: reserved at runtime
// (409, as a name on the policy's list), in a hold after a release (200,
// status held, with held_until: by this server's clock; the decider itself
// compares record timestamps), or available (404).
func (a *api) unheld(ctx context.Context, name username.Username, av Availability) (int, Availability, error) {
	st, err := a.cfg.Directory.NameState(ctx, name.Key)
	switch {
	case err != nil:
		return 0, av, err
	case st.Reserved:
		av.Status, av.Reason = StatusReserved, events.ReasonReserved
		return http.StatusConflict, av, nil
	case st.HeldUntil != nil && time.Now().Before(*st.HeldUntil):
		av.Status, av.Reason, av.ConflictsWith, av.HeldUntil = StatusHeld, events.ReasonHeld, st.HeldCanonical, st.HeldUntil
		return http.StatusOK, av, nil
	}
	av.Status, av.Available = StatusAvailable, true
	return http.StatusNotFound, av, nil
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

// upgradeGate answers writes 503 while a username policy upgrade is under
// way (HandlerConfig.Upgrading), reading the state at most once a second.
type upgradeGate struct {
	read   func(ctx context.Context) (int, error)
	client *Client
	log    *slog.Logger

	mu      sync.Mutex
	checked time.Time
	to      int
}

func (g *upgradeGate) upgrading(ctx context.Context) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if time.Since(g.checked) < time.Second {
		return g.to
	}
	to, err := g.read(ctx)
	if err != nil {
		g.log.Warn("reading whether a policy upgrade is under way", "error", err)
		return g.to // the partitions answer policy_upgrading themselves meanwhile
	}
	if g.to != 0 && to == 0 {
		g.client.ForgetPolicy() // the upgrade ended: claim under the new version
	}
	g.checked, g.to = time.Now(), to
	return to
}

func (g *upgradeGate) wrap(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if to := g.upgrading(r.Context()); to != 0 {
			// The shape of a policy_upgrading decision (httpwire.AnswerFor);
			// WriteJSON adds its Retry-After.
			httpwire.WriteJSON(w, http.StatusServiceUnavailable, httpwire.Answer{Status: "error", Reason: events.ReasonPolicyUpgrading,
				Detail: fmt.Sprintf("the registry is moving to username policy version %d; retry shortly", to)})
			return
		}
		h(w, r)
	}
}
