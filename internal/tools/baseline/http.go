package baseline

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/usernameregistry/registry/claims"
	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/httpwire"
)

// The HTTP layer uses the registry's own request parsing and answer
// writing (internal/httpwire) and validation (package claims), so the load generator cannot tell the
// two apart except by their speed and by whether they keep their
// promises. Only the deciding differs: one transaction here, instead of a
// claim on Kafka decided by the projector.

type api struct {
	store *store
	log   *slog.Logger
}

func (a *api) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/claims", a.postClaim)
	mux.HandleFunc("GET /v1/usernames/{username}", a.getUsername)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		httpwire.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", a.readyz)
	return mux
}

// postClaim validates in the registry's order (?wait, body, request_id,
// user_id, username), so one bad request gets the same answer from both.
// ?wait is checked and then ignored: the decision is always immediate.
func (a *api) postClaim(w http.ResponseWriter, r *http.Request) {
	if _, err := httpwire.ParseWait(r, 0, 0); err != nil {
		httpwire.WriteError(w, http.StatusUnprocessableEntity, events.ReasonInvalid, err.Error())
		return
	}
	body, status, err := httpwire.ReadClaim(w, r)
	if err != nil {
		httpwire.WriteError(w, status, events.ReasonInvalid, err.Error())
		return
	}
	c, err := validate(claims.Request{RequestID: body.RequestID, UserID: body.UserID, Username: body.Username})
	if err != nil {
		httpwire.WriteError(w, http.StatusUnprocessableEntity, events.ReasonInvalid, err.Error())
		return
	}
	v, err := a.store.claim(r.Context(), c)
	if err != nil {
		a.unavailable(w, err)
		return
	}
	writeVerdict(w, c, v)
}

// validate applies the registry's checks and its username policy.
func validate(req claims.Request) (claim, error) {
	cs, err := claims.Check(req, time.Now())
	if err != nil {
		return claim{}, err
	}
	return claim{
		requestID: uuid.MustParse(cs.RequestID), userID: uuid.MustParse(cs.UserID),
		name: username.Username{Typed: cs.Username, Canonical: cs.Canonical, Key: cs.Key},
	}, nil
}

// writeVerdict answers a verdict exactly as the registry answers the
// same decision.
func writeVerdict(w http.ResponseWriter, c claim, v verdict) {
	d := &events.Decision{
		RequestID: c.requestID.String(), UserID: c.userID.String(), Username: c.name.Typed, Canonical: c.name.Canonical,
		Outcome: v.status, Reason: v.reason, Conflicts: v.conflictsWith,
	}
	if v.reason == events.ReasonRequestConflict {
		d.Detail = "request_id was already used with a different username or user_id"
	}
	status, body := httpwire.AnswerFor(d)
	if status == http.StatusOK && v.won {
		status = http.StatusCreated
	}
	httpwire.WriteJSON(w, status, body)
}

func (a *api) getUsername(w http.ResponseWriter, r *http.Request) {
	name, err := username.Normalize(r.PathValue("username"))
	if err != nil {
		httpwire.WriteError(w, http.StatusUnprocessableEntity, events.ReasonInvalid, err.Error())
		return
	}
	reg, err := a.store.registration(r.Context(), name.Canonical)
	switch {
	case err != nil:
		a.unavailable(w, err)
	case reg == nil:
		httpwire.WriteJSON(w, http.StatusNotFound, httpwire.Answer{Canonical: name.Canonical, Status: "unknown"})
	default:
		httpwire.WriteJSON(w, http.StatusOK, reg)
	}
}

func (a *api) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := a.store.pool.Ping(ctx); err != nil {
		httpwire.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unready", "detail": "database unreachable: " + err.Error()})
		return
	}
	httpwire.WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// unavailable answers a database failure the way the registry does: 503,
// retry with the same request_id.
func (a *api) unavailable(w http.ResponseWriter, err error) {
	a.log.Error("database failure", "error", err)
	w.Header().Set("Retry-After", "2")
	httpwire.WriteError(w, http.StatusServiceUnavailable, "unavailable", "the database is unreachable; retry with the same request_id")
}
