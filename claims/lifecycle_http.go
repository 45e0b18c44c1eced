package claims

import (
	"context"
	"net/http"

	"github.com/google/uuid"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/httpwire"
)

// The endpoints for names that change hands. Each reads its body
// strictly, publishes one command, and waits for its decision as POST
// /v1/claims does: ?wait=, 202 with a Location when undecided, and the
// stored decision again for a retried request_id.

type releaseBody struct {
	Username  *string `json:"username"`
	UserID    string  `json:"user_id"`
	RequestID string  `json:"request_id"`
}

type renameBody struct {
	UserID    string  `json:"user_id"`
	From      *string `json:"from"`
	To        *string `json:"to"`
	RequestID string  `json:"request_id"`
}

type transferBody struct {
	Username  *string `json:"username"`
	ToUserID  string  `json:"to_user_id"`
	RequestID string  `json:"request_id"`
}

type reserveBody struct {
	RequestID string `json:"request_id"`
}

func (a *api) postRelease(w http.ResponseWriter, r *http.Request) {
	var body releaseBody
	if !a.readBody(w, r, &body, false, "release") {
		return
	}
	if body.Username == nil {
		writeInvalid(w, events.ReasonInvalid, "username is required")
		return
	}
	a.run(w, r, "/v1/releases/", func(ctx context.Context) (*Submission, error) {
		return a.cfg.Client.SubmitRelease(ctx, ReleaseRequest{Caller: CallerFrom(ctx), RequestID: body.RequestID, UserID: body.UserID, Username: *body.Username})
	})
}

func (a *api) postRename(w http.ResponseWriter, r *http.Request) {
	var body renameBody
	if !a.readBody(w, r, &body, false, "rename") {
		return
	}
	if body.From == nil || body.To == nil {
		writeInvalid(w, events.ReasonInvalid, "from and to are required")
		return
	}
	a.run(w, r, "/v1/renames/", func(ctx context.Context) (*Submission, error) {
		return a.cfg.Client.SubmitRename(ctx, RenameRequest{Caller: CallerFrom(ctx), RequestID: body.RequestID, UserID: body.UserID, From: *body.From, To: *body.To})
	})
}

func (a *api) postTransfer(w http.ResponseWriter, r *http.Request) {
	var body transferBody
	if !a.readBody(w, r, &body, false, "transfer") {
		return
	}
	if body.Username == nil {
		writeInvalid(w, events.ReasonInvalid, "username is required")
		return
	}
	if body.ToUserID == "" {
		writeInvalid(w, events.ReasonInvalid, "to_user_id is required")
		return
	}
	a.run(w, r, "/v1/admin/transfers/", func(ctx context.Context) (*Submission, error) {
		return a.cfg.Client.SubmitTransfer(ctx, TransferRequest{Caller: CallerFrom(ctx), RequestID: body.RequestID, Username: *body.Username, ToUserID: body.ToUserID})
	})
}

func (a *api) putReserved(w http.ResponseWriter, r *http.Request)    { a.reserve(w, r, true) }
func (a *api) deleteReserved(w http.ResponseWriter, r *http.Request) { a.reserve(w, r, false) }

func (a *api) reserve(w http.ResponseWriter, r *http.Request, reserve bool) {
	var body reserveBody
	if !a.readBody(w, r, &body, true, "reservation") {
		return
	}
	name := r.PathValue("username")
	a.run(w, r, "/v1/admin/requests/", func(ctx context.Context) (*Submission, error) {
		return a.cfg.Client.SubmitReserve(ctx, ReserveRequest{Caller: CallerFrom(ctx), RequestID: body.RequestID, Username: name}, reserve)
	})
}

// run submits a command with ?wait= and answers its result.
func (a *api) run(w http.ResponseWriter, r *http.Request, statusPath string, submit func(context.Context) (*Submission, error)) {
	wait, err := a.waitParam(r)
	if err != nil {
		writeInvalid(w, events.ReasonInvalid, err.Error())
		return
	}
	sub, err := submit(r.Context())
	if err != nil {
		a.claimError(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	a.writeResultAt(w, sub.Await(ctx), statusPath)
}

// getDecision answers GET /v1/{releases,renames,admin/transfers}/{id}
// like GET /v1/claims/{id}: the stored decision, 202 pending while a
// rename is under way, 404 unknown.
func (a *api) getDecision(w http.ResponseWriter, r *http.Request) {
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
	status, body := httpwire.AnswerFor(d)
	if status != http.StatusAccepted {
		status = http.StatusOK
	}
	httpwire.WriteJSON(w, status, body)
}

// readBody decodes a JSON body into dst strictly, as POST /v1/claims
// does (httpwire.ReadJSON: unknown, duplicate or wrong-case field names
// are refused with 422), answering the error itself; an empty body is
// allowed when optional. what names the body in the error ("release").
func (a *api) readBody(w http.ResponseWriter, r *http.Request, dst any, optional bool, what string) bool {
	if status, err := httpwire.ReadJSON(w, r, dst, optional, what); err != nil {
		httpwire.WriteError(w, status, events.ReasonInvalid, err.Error())
		return false
	}
	return true
}
