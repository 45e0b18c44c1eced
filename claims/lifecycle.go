package claims

import (
	"cmp"
	"context"
	"errors"
	"time"

	"github.com/usernameregistry/registry/events"
)

// DefaultHoldPeriod is the hold period the registry's commands default to
// (--hold): 30 days. ClientConfig.HoldPeriod's zero value means no hold.
const DefaultHoldPeriod = 30 * 24 * time.Hour

// ReleaseRequest gives up a name its user holds.
type ReleaseRequest struct {
	RequestID string // optional UUID; generated when empty. Reuse it to retry.
	UserID    string // UUID of the holder; required
	Username  string // the name, as typed
	Caller    string // the service asking; empty uses ClientConfig.Caller
}

// RenameRequest moves a user from one name (which it holds) to another.
type RenameRequest struct {
	RequestID string // optional UUID; generated when empty
	UserID    string // UUID of from's holder; required
	From, To  string // as typed
	Caller    string // the service asking; empty uses ClientConfig.Caller
}

// TransferRequest gives a held name to another user (an administrator's
// command).
type TransferRequest struct {
	RequestID string // optional UUID; generated when empty
	Username  string // the held name
	ToUserID  string // UUID of the new holder; required
	Caller    string // the service asking; empty uses ClientConfig.Caller
}

// ReserveRequest reserves a name at runtime, or (Unreserve) lifts such a
// reservation (an administrator's command).
type ReserveRequest struct {
	RequestID string // optional UUID; generated when empty
	Username  string
	Caller    string // the service asking; empty uses ClientConfig.Caller
}

// Release gives req's name up: "released" (with held_until when the hold
// period is not 0), or rejected "not_holder". Invalid input fails with
// ErrInvalid before anything is published; a nil Result.Decision means
// still pending when ctx ended.
func (c *Client) Release(ctx context.Context, req ReleaseRequest) (Result, error) {
	return awaitSubmitted(ctx)(c.SubmitRelease(ctx, req))
}

// SubmitRelease publishes a release (see Submit for the split of the write
// and the wait).
func (c *Client) SubmitRelease(ctx context.Context, req ReleaseRequest) (*Submission, error) {
	body, err := c.body(ctx, req.RequestID, req.UserID, req.Username, req.Caller)
	if err != nil {
		return nil, err
	}
	body.HoldSeconds = int64(c.cfg.HoldPeriod / time.Second)
	return c.submit(ctx, &command{typ: events.TypeReleaseSubmitted, body: body, command: events.CommandRelease}, req.RequestID != "")
}

// Rename moves req's user from From to To: "renamed", or rejected with the
// reason of the step that refused (not_holder for From; taken,
// confusable, reserved or held for To), nothing changed.
func (c *Client) Rename(ctx context.Context, req RenameRequest) (Result, error) {
	return awaitSubmitted(ctx)(c.SubmitRename(ctx, req))
}

// SubmitRename publishes a rename's first step.
func (c *Client) SubmitRename(ctx context.Context, req RenameRequest) (*Submission, error) {
	body, err := c.body(ctx, req.RequestID, req.UserID, req.From, req.Caller)
	if err != nil {
		return nil, err
	}
	policy, err := c.Policy(ctx)
	if err != nil {
		return nil, err
	}
	to, err := policy.Normalize(req.To)
	if err != nil {
		return nil, &InvalidError{Detail: "to: " + err.Error()}
	}
	if to.Key == body.Key {
		return nil, &InvalidError{Detail: "to is the same name as from, or confusable with it"}
	}
	body.HoldSeconds = int64(c.cfg.HoldPeriod / time.Second)
	body.Rename = &events.RenameStep{RequestID: body.RequestID, From: req.From, FromCanonical: body.Canonical, FromKey: body.Key,
		To: req.To, ToCanonical: to.Canonical, ToKey: to.Key}
	return c.submit(ctx, &command{typ: events.TypeRenameSubmitted, body: body, command: events.CommandRename}, req.RequestID != "")
}

// Transfer gives a held name to req.ToUserID: "transferred", or rejected
// "not_held" when nobody holds it.
func (c *Client) Transfer(ctx context.Context, req TransferRequest) (Result, error) {
	return awaitSubmitted(ctx)(c.SubmitTransfer(ctx, req))
}

// SubmitTransfer publishes a transfer.
func (c *Client) SubmitTransfer(ctx context.Context, req TransferRequest) (*Submission, error) {
	body, err := c.body(ctx, req.RequestID, req.ToUserID, req.Username, req.Caller)
	if err != nil {
		return nil, err
	}
	return c.submit(ctx, &command{typ: events.TypeTransferSubmitted, body: body, command: events.CommandTransfer}, req.RequestID != "")
}

// Reserve reserves a name at runtime: "reserved", or rejected "taken"
// when someone holds it. Claims of it are then rejected "reserved".
func (c *Client) Reserve(ctx context.Context, req ReserveRequest) (Result, error) {
	return awaitSubmitted(ctx)(c.SubmitReserve(ctx, req, true))
}

// Unreserve lifts a runtime reservation: "unreserved" (also when there
// was none).
func (c *Client) Unreserve(ctx context.Context, req ReserveRequest) (Result, error) {
	return awaitSubmitted(ctx)(c.SubmitReserve(ctx, req, false))
}

// SubmitReserve publishes a reservation (reserve) or its removal.
func (c *Client) SubmitReserve(ctx context.Context, req ReserveRequest, reserve bool) (*Submission, error) {
	requestID, err := parseID("request_id", req.RequestID, true)
	if err != nil {
		return nil, err
	}
	policy, err := c.Policy(ctx)
	if err != nil {
		return nil, err
	}
	name, err := policy.Normalize(req.Username)
	if err != nil {
		return nil, err
	}
	body := &events.ClaimSubmitted{RequestID: requestID, Username: req.Username, Canonical: name.Canonical, Key: name.Key,
		PolicyVersion: policy.Version(), SubmittedAt: c.cfg.Now().UTC(), Caller: cmp.Or(req.Caller, c.cfg.Caller)}
	cmd := &command{typ: events.TypeReservationSubmitted, body: body, command: events.CommandReserve}
	if !reserve {
		cmd.typ, cmd.command = events.TypeUnreservation, events.CommandUnreserve
	}
	return c.submit(ctx, cmd, req.RequestID != "")
}

// body checks the fields every user command has and builds its record
// body under the policy version in force (as a claim's, see build);
// errors wrap ErrInvalid, or ErrPolicyUnavailable while the version
// cannot be read.
//
// A name the policy refuses is taken as Policy.Inspect reads it when
// ClientConfig.CarriedInvalid says a policy upgrade carried it so (its
// holder keeps it and may release, rename or be given it away; the
// projector of an upgraded partition reads it the same way).
func (c *Client) body(ctx context.Context, requestID, userID, username, caller string) (*events.ClaimSubmitted, error) {
	req := Request{RequestID: requestID, UserID: userID, Username: username, Caller: cmp.Or(caller, c.cfg.Caller)}
	body, err := c.build(ctx, req)
	if err == nil || c.cfg.CarriedInvalid == nil || !errors.Is(err, ErrInvalid) {
		return body, err
	}
	policy, perr := c.Policy(ctx)
	if perr != nil {
		return nil, err
	}
	u, ok := policy.Inspect(username)
	if !ok {
		return nil, err
	}
	if held, herr := c.cfg.CarriedInvalid(ctx, u.Key, u.Canonical); herr != nil || !held {
		return nil, err
	}
	body, berr := checkName(policy, req, c.cfg.Now(), &u)
	if berr != nil {
		return nil, err
	}
	return body, nil
}

func awaitSubmitted(ctx context.Context) func(*Submission, error) (Result, error) {
	return func(s *Submission, err error) (Result, error) {
		if err != nil {
			return Result{}, err
		}
		return s.Await(ctx), nil
	}
}
