// Package httpwire is the claim API's HTTP wire format: how a POST
// /v1/claims body is read, how ?wait is parsed, and how every answer is
// written (one JSON object and a newline; a decision's status code from
// its reason in events.Reasons). The registry's handler (package claims)
// and the baseline it is measured against (internal/tools/baseline) both
// answer through it, so a client cannot tell them apart by their answers.
// It is internal: the API's contract is the HTTP one, not these helpers.
package httpwire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/usernameregistry/registry/events"
)

// MaxBodyBytes is the largest POST body the API reads; larger ones get 413.
const MaxBodyBytes = 64 << 10

// claimBody is the POST /v1/claims request body as JSON.
type claimBody struct {
	Username  *string `json:"username"`
	UserID    string  `json:"user_id"`
	RequestID string  `json:"request_id"`
}

// Claim is a POST /v1/claims body, decoded.
type Claim struct {
	RequestID string // empty when the body has none
	UserID    string
	Username  string
}

// ReadClaim decodes a POST /v1/claims body as the API does, returning the
// status code to answer with when it cannot.
func ReadClaim(w http.ResponseWriter, r *http.Request) (Claim, int, error) {
	body, status, err := readClaimBody(w, r)
	if err != nil {
		return Claim{}, status, err
	}
	return Claim{RequestID: body.RequestID, UserID: body.UserID, Username: *body.Username}, 0, nil
}

// readClaimBody decodes the body strictly (see ReadJSON), so a misspelt
// "userid" is an error, not a missing user.
func readClaimBody(w http.ResponseWriter, r *http.Request) (claimBody, int, error) {
	var body claimBody
	if status, err := ReadJSON(w, r, &body, false, "claim"); err != nil {
		return body, status, err
	}
	if body.Username == nil {
		return body, http.StatusUnprocessableEntity, errors.New("username is required")
	}
	return body, 0, nil
}

// ReadJSON decodes a request body (at most MaxBodyBytes) into dst
// strictly, with encoding/json/v2 semantics
// (github.com/go-json-experiment/json): unknown fields are refused; field
// names must match exactly ("USER_ID" is unknown, not user_id); a field
// given twice is refused rather than the last one silently winning;
// invalid UTF-8 is refused, not turned into U+FFFD; and nothing may follow
// the object. An empty body leaves dst alone when optional. On failure it
// returns the status code to answer with (413, 400 or 422) and an error
// for a person that names what (a "claim", a "release") was being read.
// Every POST and PUT of the API reads its body through it.
func ReadJSON(w http.ResponseWriter, r *http.Request, dst any, optional bool, what string) (int, error) {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge, fmt.Errorf("request body is larger than %d bytes", MaxBodyBytes)
	case err != nil:
		return http.StatusBadRequest, fmt.Errorf("reading request body: %v", err)
	case optional && len(bytes.TrimSpace(raw)) == 0:
		return 0, nil
	case !utf8.Valid(raw):
		return http.StatusUnprocessableEntity, errors.New("request body is not valid UTF-8")
	}
	if err := jsonv2.Unmarshal(raw, dst, jsonv2.RejectUnknownMembers(true)); err != nil {
		return http.StatusUnprocessableEntity, bodyError(err, what)
	}
	return 0, nil
}

// bodyError says what is wrong with a body in a person's words.
func bodyError(err error, what string) error {
	var sem *jsonv2.SemanticError
	var syn *jsontext.SyntacticError
	switch {
	case errors.As(err, &sem) && errors.Is(sem.Err, jsonv2.ErrUnknownName):
		return fmt.Errorf("request body is not a valid %s: unknown field %q (field names are matched exactly, case included)", what, sem.JSONPointer.LastToken())
	case errors.As(err, &syn) && errors.Is(syn.Err, jsontext.ErrDuplicateName):
		return fmt.Errorf("request body is not a valid %s: duplicate field %q", what, syn.JSONPointer.LastToken())
	case strings.Contains(err.Error(), "after top-level value"):
		return errors.New("request body holds more than one JSON value")
	}
	return fmt.Errorf("request body is not a valid %s: %v", what, err)
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

// ParseWait reads ?wait: def when absent, capped at max, an error when it
// is not a non-negative duration.
func ParseWait(r *http.Request, def, max time.Duration) (time.Duration, error) {
	s := r.URL.Query().Get("wait")
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return 0, fmt.Errorf("wait %q is not a duration such as 5s or 500ms", s)
	case d < 0:
		return 0, fmt.Errorf("wait %q is negative; give 0 to answer at once, or a duration such as 5s", s)
	}
	return min(d, max), nil
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
	case reason.HTTPStatus >= 500: // policy_upgrading: nothing decided, retry; 5xx answers say error, as WriteError's
		return reason.HTTPStatus, Answer{RequestID: d.RequestID, Status: "error", Reason: d.Reason, Detail: d.Detail}
	case reason.Detail:
		return reason.HTTPStatus, Answer{RequestID: d.RequestID, Status: d.Outcome, Reason: d.Reason, Detail: d.Detail}
	}
	body.Reason = d.Reason
	if reason.ConflictsWith {
		body.ConflictsWith = d.Conflicts
	}
	return reason.HTTPStatus, body
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
	if a, ok := body.(Answer); ok {
		if r, known := events.LookupReason(a.Reason); known && r.Retryable {
			w.Header().Set("Retry-After", "2") // policy_upgrading: the partition decides again shortly
		}
	}
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
