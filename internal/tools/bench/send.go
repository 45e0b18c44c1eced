package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"syscall"
)

// Error types in the report.
const (
	errRefused = "connection_refused" // nothing listens at the URL
	errTimeout = "timeout"            // no answer within Config.Timeout
	errNotSent = "not_sent"           // open loop: too many claims outstanding
	errOther   = "other"              // anything else, such as a reset connection or an unreadable body
	errAuth    = "unauthorized"       // 401 or 403: the API refused the bench's token (REGISTRY_BENCH_TOKEN)
)

// maxAnswerBytes bounds how much of an answer is read; the API's answers
// are a few hundred bytes.
const maxAnswerBytes = 64 << 10

// sender posts claims.
type sender struct {
	client *http.Client
	url    string // POST target, ?wait= included
	token  string // bearer token; empty sends none
}

func newSender(cfg Config) *sender {
	return &sender{client: cfg.httpClient(), url: cfg.URL + "/v1/claims?wait=" + cfg.Wait.String(), token: cfg.Token}
}

// answerBody is the part of an answer the benchmark reads.
type answerBody struct {
	Status    string `json:"status"`
	Reason    string `json:"reason"`
	Canonical string `json:"canonical"`
}

// send posts c and returns the answer, or an error with its type.
func (s *sender) send(ctx context.Context, c claim) (Answer, string, error) {
	body, err := json.Marshal(c)
	if err != nil {
		return Answer{}, errOther, fmt.Errorf("encoding claim: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return Answer{}, errOther, fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return Answer{}, errorType(err), err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		// Not an answer about the claim: counting it as one would report
		// a run in which nothing was claimed as a clean one.
		return Answer{}, errAuth, fmt.Errorf("answer %d: the API refused the bench's token (set REGISTRY_BENCH_TOKEN to a token with the claim scope)", resp.StatusCode)
	}
	a := Answer{RequestID: c.RequestID, UserID: c.UserID, Username: c.Username, Code: resp.StatusCode}
	var ab answerBody
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return Answer{}, errorType(err), fmt.Errorf("reading answer: %w", err)
	}
	if err := json.Unmarshal(raw, &ab); err != nil {
		return Answer{}, errOther, fmt.Errorf("answer %d is not JSON: %w", resp.StatusCode, err)
	}
	a.Status, a.Reason, a.Canonical = ab.Status, ab.Reason, ab.Canonical
	return a, "", nil
}

// errorType sorts a transport error into the report's types.
func errorType(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return errRefused
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return errTimeout
	default:
		return errOther
	}
}

// answerLabel is how an answer is counted: the code and the reason, or the
// status when there is no reason ("201 registered", "409 taken").
func answerLabel(a Answer) string {
	what := a.Reason
	if what == "" {
		what = a.Status
	}
	if what == "" {
		what = "?"
	}
	return strconv.Itoa(a.Code) + " " + what
}
