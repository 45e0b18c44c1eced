package claims

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
)

// ErrInvalid is wrapped by every rejection of a request the API refuses
// itself, the username policy's included (username.ErrInvalid).
var ErrInvalid = username.ErrInvalid

// InvalidError carries a reason a person understands.
type InvalidError = username.InvalidError

// Decisions delivers decisions read from the registrations topic.
// *registrations.Reader implements it.
type Decisions interface {
	// Subscribe returns a channel that receives every decision for
	// requestID read after the call, until cancel is called. It fails
	// when no more requests can wait (too many do, or the reader is not
	// positioned); the client answers that as ErrOverloaded.
	Subscribe(requestID string) (decisions <-chan *events.Decision, cancel func(), err error)
}

// Ledger looks up a request_id's stored decision; nil means none yet.
// *projector.Store implements it.
type Ledger interface {
	Decision(ctx context.Context, requestID string) (*events.Decision, error)
}

// Errors a claim can end in besides a decision.
var (
	// ErrOverloaded: this instance cannot hold another waiting claim now
	// (too many wait, or its decisions reader is not positioned yet).
	ErrOverloaded = errors.New("too many claims waiting for a decision")
	// ErrUnavailable: the claim could not be written to Kafka. It may
	// still have been written; retry with the same request_id.
	ErrUnavailable = errors.New("claims topic unavailable")
	// ErrLedgerUnavailable: the request ledger (the database) could not be
	// read to answer a retried request_id. Nothing was written; retry with
	// the same request_id.
	ErrLedgerUnavailable = errors.New("request ledger unavailable")
	// ErrPolicyUnavailable: the username policy version the deployment
	// decides under could not be read from the database. Nothing was
	// written; retry.
	ErrPolicyUnavailable = errors.New("username policy version unavailable")
)

// ClientConfig configures a Client.
type ClientConfig struct {
	// Producer writes claims. It must use franz-go's default partitioner
	// (murmur2 over the key); ProducerLinger(0) keeps a waiting request
	// from waiting on a linger. Required.
	Producer *kgo.Client
	// Decisions delivers decisions to waiting claims. Required.
	Decisions Decisions
	// HoldPeriod is the hold period releases and renames carry (whole
	// seconds; the decider adds it to the deciding record's timestamp).
	// 0 means no hold; cmd/registry defaults it to 30 days.
	HoldPeriod time.Duration
	// AdminKeys signs the administrative commands (reserve, unreserve,
	// transfer: events.HeaderProof) the projectors obey only when signed.
	// Nil sends them unsigned, and they are decided invalid.
	AdminKeys *events.AdminKeys
	// Topics names the registry's topics; claims go to Topics.Claims.
	// Defaults to events' default names.
	Topics events.Topics
	// Policy is the username policy the deployment decides under, as
	// recorded in its database (projector.PolicyVersion): claims are
	// normalized and stamped with it, and lookups answer under it. When
	// nil, PolicyVersion reads it; when both are nil, it is the latest
	// version, username.Latest.
	Policy *username.Policy
	// PolicyVersion, when Policy is nil, reads the version the deployment
	// decides under the first time a claim or a lookup needs it, and again
	// until a read succeeds: a database that is down when the client starts
	// makes claims fail with ErrPolicyUnavailable (503) until it answers,
	// not the client fail to start.
	PolicyVersion func(ctx context.Context) (int, error)
	// CarriedInvalid, when set, reports whether a policy upgrade carried a
	// name the policy refuses, with this key and canonical form (as
	// Policy.Inspect reads it), to a holder: releases, renames and
	// transfers of such a name are then written under those forms instead
	// of refused (the projector of an upgraded partition reads them so).
	// Nil refuses them, as before any upgrade.
	CarriedInvalid func(ctx context.Context, key, canonical string) (bool, error)
	// Ledger, when set, answers a retried request_id straight from the
	// stored decision instead of producing the claim again.
	Ledger Ledger
	// WriteTimeout bounds the write of a claim: past it Submit fails with
	// ErrUnavailable whatever the producer is doing. Defaults to 10 s.
	WriteTimeout time.Duration
	// Caller names the service this client writes claims for; it is
	// recorded in every claim (events.ClaimSubmitted.Caller) and shown with
	// its decision. A Request's own Caller wins. The embedded client writes
	// straight to Kafka: what authenticates it is its Kafka credential,
	// and write access to claims is as powerful as the API's claim scope
	// (docs/deployment.md). Optional.
	Caller string
	// Now stamps SubmittedAt. Defaults to time.Now.
	Now func() time.Time
	// Metrics records claims written and time to decision. Defaults to
	// unregistered metrics.
	Metrics *Metrics
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Client claims usernames and awaits their decisions.
type Client struct {
	cfg    ClientConfig
	policy atomic.Pointer[knownPolicy] // once known
}

// knownPolicy is the policy version read from ClientConfig.PolicyVersion,
// and when it was read.
type knownPolicy struct {
	policy *username.Policy
	read   time.Time // zero for a configured policy: never read again
}

// PolicyRecheck is how long a Client trusts the policy version it read
// from ClientConfig.PolicyVersion before it reads it again. A policy
// upgrade (registry policy upgrade) changes the version while API nodes
// run: within this time every node claims and looks names up under the
// new one. A claim made meanwhile under the old version is answered
// policy_upgrading (retryable), never decided under the wrong version.
const PolicyRecheck = time.Second

// NewClient returns a Client.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Producer == nil || cfg.Decisions == nil {
		return nil, errors.New("claims: ClientConfig needs a Producer and Decisions")
	}
	c := &Client{cfg: cfg.WithDefaults()}
	switch {
	case cfg.Policy != nil:
		c.policy.Store(&knownPolicy{policy: cfg.Policy})
	case cfg.PolicyVersion == nil:
		c.policy.Store(&knownPolicy{policy: username.MustVersion(username.Latest)})
	}
	return c, nil
}

// WithDefaults returns cfg with every unset field that has a default set
// to it: the one place the defaults are written.
func (cfg ClientConfig) WithDefaults() ClientConfig {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.WriteTimeout = cmp.Or(cfg.WriteTimeout, 10*time.Second)
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	cfg.Topics = cfg.Topics.WithDefaults()
	return cfg
}

// Request is a claim as a signup service asks for it.
type Request struct {
	RequestID string // optional UUID; one is generated when empty. Reuse it to retry.
	UserID    string // UUID of the user; required
	Username  string // as typed
	// Caller names the service asking, recorded in the claim; empty uses
	// ClientConfig.Caller. The HTTP API sets it to the authenticated caller.
	Caller string
}

// Result is how a claim ended.
type Result struct {
	RequestID string
	// Decision is the durable decision, or nil when none arrived before
	// ctx ended: the claim is pending and will still be decided.
	Decision *events.Decision
	// Won is true when this call's own claim record won the name, as
	// opposed to a retry of a decided request or a user re-claiming a
	// name it already holds.
	Won bool
}

// Claim validates req, publishes the claim and waits until its decision
// arrives or ctx ends. Invalid input fails with an error wrapping
// ErrInvalid, before anything is published. It is Submit then Await with
// one context.
func (c *Client) Claim(ctx context.Context, req Request) (Result, error) {
	s, err := c.Submit(ctx, req)
	if err != nil {
		return Result{}, err
	}
	return s.Await(ctx), nil
}

// Submission is a claim that was published (or answered from the ledger)
// and whose decision can be awaited.
type Submission struct {
	metrics   *Metrics
	written   time.Time // when the claim was acknowledged by Kafka
	res       Result
	cmd       *command
	rec       *kgo.Record
	decisions <-chan *events.Decision
	cancel    func()
	forget    func() // drops the client's cached policy version; nil when the version is configured
}

// Submit validates req, subscribes to its decision and publishes the
// claim. ctx bounds the publishing only, so a caller can give the write
// and the wait different deadlines. The subscription is released by Await
// or Close.
func (c *Client) Submit(ctx context.Context, req Request) (*Submission, error) {
	claim, err := c.build(ctx, req)
	if err != nil {
		if d := c.storedRefused(ctx, req, err); d != nil {
			return &Submission{metrics: c.cfg.Metrics, res: Result{RequestID: d.RequestID, Decision: d}, cancel: func() {}}, nil
		}
		return nil, err
	}
	return c.submit(ctx, &command{typ: events.TypeClaimSubmitted, body: claim}, req.RequestID != "")
}

// storedRefused answers a retried claim whose name the policy in force
// now refuses (err, from build) but which was decided under an older
// version before a policy upgrade: its stored final decision for the same
// user and username, so that every answer for a request agrees across the
// upgrade. Nil, and the refusal stands, when there is none, when the
// request is not a claim's, or when the ledger cannot be read.
func (c *Client) storedRefused(ctx context.Context, req Request, err error) *events.Decision {
	if c.cfg.Ledger == nil || req.RequestID == "" || !errors.Is(err, username.ErrInvalid) {
		return nil
	}
	id, perr := uuid.Parse(req.RequestID)
	if perr != nil {
		return nil
	}
	user, perr := uuid.Parse(req.UserID)
	if perr != nil {
		return nil
	}
	d, lerr := c.cfg.Ledger.Decision(ctx, id.String())
	if lerr != nil || d == nil || !events.Final(d.Outcome) || d.Reason == events.ReasonInvalid ||
		d.Command != events.CommandClaim || d.UserID != user.String() || d.Username != req.Username {
		return nil
	}
	return d
}

// command is a command on the claims topic as the client sends it: its
// event type, its body, and the Decision.Command its decision carries.
type command struct {
	typ     string
	body    *events.ClaimSubmitted
	command string
}

// admin reports whether cmd is an administrative command, which carries
// a proof.
func (c *command) admin() bool {
	switch c.typ {
	case events.TypeReservationSubmitted, events.TypeUnreservation, events.TypeTransferSubmitted:
		return true
	}
	return false
}

// to is a rename's to as typed; empty for the other commands.
func (c *command) to() string {
	if c.body.Rename != nil {
		return c.body.Rename.To
	}
	return ""
}

// submit publishes cmd and subscribes to its decision; retried says the
// request_id came from the caller, so the ledger may already answer it.
func (c *Client) submit(ctx context.Context, cmd *command, retried bool) (*Submission, error) {
	claim := cmd.body
	var err error
	s := &Submission{metrics: c.cfg.Metrics, res: Result{RequestID: claim.RequestID}, cmd: cmd, cancel: func() {}}
	if c.cfg.Policy == nil && c.cfg.PolicyVersion != nil {
		s.forget = func() { c.policy.Store(nil) }
	}
	if retried {
		// A retry answered from the ledger needs no waiter slot. If the
		// decision lands just after this lookup, producing again makes the
		// projector re-emit it, so the waiter below still gets it.
		if s.res.Decision, err = c.stored(ctx, cmd); err != nil {
			return nil, fmt.Errorf("%w: looking up request_id %s: %w", ErrLedgerUnavailable, claim.RequestID, err)
		}
		if s.res.Decision != nil {
			return s, nil
		}
	}
	if s.decisions, s.cancel, err = c.cfg.Decisions.Subscribe(claim.RequestID); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrOverloaded, err)
	}
	if s.rec, err = c.produce(ctx, cmd); err != nil {
		s.cancel()
		return nil, err
	}
	s.written = time.Now()
	c.cfg.Metrics.submitted.Inc()
	return s, nil
}

// produce writes the command and waits for the broker's acknowledgement,
// at most WriteTimeout and no longer than ctx (a caller that leaves).
// Administrative commands are signed first when the client holds the
// admin keys.
//
// It does not wait for franz-go to give up on the record: an idempotent
// producer never fails a record whose request reached the broker
// unanswered (a broker that died or froze mid-request), because whether
// it was written is unknown and the sequence numbers must stay in order;
// it retries it for as long as the client lives. The record stays in the
// producer's buffer and may still be written; the caller is told
// ErrUnavailable and retries with the same request_id, which the ledger
// answers once it is decided.
func (c *Client) produce(ctx context.Context, cmd *command) (*kgo.Record, error) {
	rec, err := events.CommandRecord(cmd.typ, cmd.body)
	if err != nil {
		return nil, err
	}
	rec.Topic = c.cfg.Topics.Claims
	if cmd.admin() && c.cfg.AdminKeys != nil {
		c.cfg.AdminKeys.Sign(rec)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.WriteTimeout)
	defer cancel()
	acked := make(chan error, 1)
	c.cfg.Producer.Produce(ctx, rec, func(_ *kgo.Record, err error) { acked <- err })
	select {
	case err := <-acked:
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return rec, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: the command was not acknowledged in time (it may still be written; retry with the same request_id): %w",
			ErrUnavailable, ctx.Err())
	}
}

// RequestID is the claim's request_id, generated when the request had none.
func (s *Submission) RequestID() string { return s.res.RequestID }

// Await waits for the claim's decision until ctx ends; a nil
// Result.Decision means it is still pending. It releases the subscription.
func (s *Submission) Await(ctx context.Context) Result {
	defer s.Close()
	if s.res.Decision == nil {
		s.res.Decision = await(ctx, s.decisions, s.cmd, s.rec.Partition)
		if d := s.res.Decision; d != nil && d.Reason == events.ReasonPolicyUpgrading && s.forget != nil {
			s.forget() // the registry is moving to a new policy version: read it again for the next command
		}
		s.res.Won = s.res.Decision != nil && won(s.res.Decision, s.rec)
		if s.res.Decision != nil {
			s.metrics.decisionSeconds.Observe(time.Since(s.written).Seconds())
		}
	}
	return s.res
}

// Close releases the subscription without waiting.
func (s *Submission) Close() { s.cancel() }

func (c *Client) build(ctx context.Context, req Request) (*events.ClaimSubmitted, error) {
	if req.Caller == "" {
		req.Caller = c.cfg.Caller
	}
	policy, err := c.Policy(ctx)
	if err != nil {
		return nil, err
	}
	return CheckPolicy(policy, req, c.cfg.Now())
}

// ForgetPolicy makes the client read the policy version again for its
// next command (after a policy upgrade); a client given a fixed Policy
// keeps it.
func (c *Client) ForgetPolicy() {
	if c.cfg.Policy == nil && c.cfg.PolicyVersion != nil {
		c.policy.Store(nil)
	}
}

// Policy is the username policy the client claims under. It fails,
// wrapping ErrPolicyUnavailable, only while the configured PolicyVersion
// cannot be read.
//
// A version read from ClientConfig.PolicyVersion is read again once it is
// PolicyRecheck old, so an upgrade reaches every API node. While the
// version cannot be read again, the one known is kept: a database outage
// does not stop claims whose version is known.
func (c *Client) Policy(ctx context.Context) (*username.Policy, error) {
	known := c.policy.Load()
	if known != nil && (known.read.IsZero() || time.Since(known.read) < PolicyRecheck) {
		return known.policy, nil
	}
	v, err := c.cfg.PolicyVersion(ctx)
	if err != nil {
		if known != nil {
			return known.policy, nil
		}
		return nil, fmt.Errorf("%w: %w", ErrPolicyUnavailable, err)
	}
	p, err := username.ForVersion(v)
	if err != nil {
		return nil, fmt.Errorf("the database's username policy: %w", err)
	}
	c.policy.Store(&knownPolicy{policy: p, read: time.Now()})
	return p, nil
}

// Check validates req (UUIDs, the latest username policy) and turns it
// into the claim the API of a new registry would publish, stamped now. Its
// errors wrap ErrInvalid.
func Check(req Request, now time.Time) (*events.ClaimSubmitted, error) {
	return CheckPolicy(username.MustVersion(username.Latest), req, now)
}

// CheckPolicy is Check under the given policy version.
func CheckPolicy(policy *username.Policy, req Request, now time.Time) (*events.ClaimSubmitted, error) {
	return checkName(policy, req, now, nil)
}

// checkName is CheckPolicy with the name's forms given (a name carried by
// a policy upgrade that the policy refuses, as Inspect reads it); nil
// normalizes req.Username.
func checkName(policy *username.Policy, req Request, now time.Time, given *username.Username) (*events.ClaimSubmitted, error) {
	requestID, err := parseID("request_id", req.RequestID, true)
	if err != nil {
		return nil, err
	}
	userID, err := parseID("user_id", req.UserID, false)
	if err != nil {
		return nil, err
	}
	var name username.Username
	if given != nil {
		name = *given
	} else if name, err = policy.Normalize(req.Username); err != nil {
		return nil, err
	}
	return &events.ClaimSubmitted{
		RequestID: requestID, UserID: userID, Username: req.Username, Canonical: name.Canonical, Key: name.Key,
		PolicyVersion: policy.Version(), SubmittedAt: now.UTC(), Caller: req.Caller,
	}, nil
}

// parseID checks a UUID field; an empty optional one gets a fresh UUIDv7,
// whose time order keeps the ledger's index append-mostly.
func parseID(field, s string, optional bool) (string, error) {
	if s == "" && optional {
		return uuid.Must(uuid.NewV7()).String(), nil
	}
	if s == "" {
		return "", &InvalidError{Detail: field + " is required"}
	}
	id, err := uuid.Parse(s)
	if err != nil {
		return "", &InvalidError{Detail: fmt.Sprintf("%s %q is not a UUID", field, s)}
	}
	return id.String(), nil
}

// stored answers a retried request_id from the ledger. A different payload
// for a name with the same key under a decided request_id is a
// request_conflict: the projector would decide the same, since that
// partition's ledger already holds the first decision.
func (c *Client) stored(ctx context.Context, cmd *command) (*events.Decision, error) {
	if c.cfg.Ledger == nil {
		return nil, nil
	}
	claim := cmd.body
	d, err := c.cfg.Ledger.Decision(ctx, claim.RequestID)
	if err != nil || d == nil {
		return nil, err
	}
	if d.Outcome == events.OutcomeRejected && d.Reason == events.ReasonInvalid {
		// The stored decision is for a record the registry could not
		// take (another producer's, in the wrong partition, say). This
		// command passed the policy and goes to its key's partition, whose
		// own decision is the answer (docs/design.md): produce and wait.
		return nil, nil
	}
	if samePayload(d, cmd) {
		if !events.Final(d.Outcome) {
			return nil, nil // a rename under way: produce again (a copy) and wait for its end
		}
		return d, nil
	}
	if !c.sameKey(d, claim) {
		// Stored for a name in another partition. This claim's own
		// partition decides it on its merits (docs/design.md), perhaps
		// already has: only that decision may answer it, so produce and
		// wait. Answering request_conflict here would contradict it.
		return nil, nil
	}
	return &events.Decision{
		RequestID: claim.RequestID, UserID: claim.UserID, Username: claim.Username, Canonical: claim.Canonical,
		Outcome: events.OutcomeRejected, Reason: events.ReasonRequestConflict,
		Detail: "request_id was already used with a different username or user_id", PolicyVersion: claim.PolicyVersion,
		Command: cmd.command,
	}, nil
}

// sameKey reports whether d decides a name with claim's partition key,
// so that the projector would answer claim from the same ledger.
func (c *Client) sameKey(d *events.Decision, claim *events.ClaimSubmitted) bool {
	policy, err := username.ForVersion(claim.PolicyVersion) // the version the claim was made under
	if err != nil || d.Canonical == "" {
		return false
	}
	n, err := policy.Normalize(d.Canonical)
	return err == nil && n.Key == claim.Key
}

// samePayload reports whether d decides a command with cmd's payload: the
// same command, user and username as typed (and a rename's to).
func samePayload(d *events.Decision, cmd *command) bool {
	return d.UserID == cmd.body.UserID && d.Username == cmd.body.Username && d.Command == cmd.command && d.ToUsername == cmd.to()
}

// await returns the first decision for this claim's payload made in
// partition, the one the claim was written to, or nil when ctx ends first.
// Decisions for the same request_id with another payload belong to
// another request and are passed over. So are decisions made in another
// partition: the same payload can have been decided there too, invalid (a
// foreign producer's claim written to the wrong partition), and that says
// nothing about this record, which its own partition decides
// (docs/design.md, "A request_id decided in several partitions"). Every
// command's final decision is made in the partition it was written to (a
// rename's step 3 goes back to from's).
func await(ctx context.Context, decisions <-chan *events.Decision, cmd *command, partition int32) *events.Decision {
	for {
		select {
		case <-ctx.Done():
			return nil
		case d := <-decisions:
			if d.ClaimPartition == partition && samePayload(d, cmd) && events.Final(d.Outcome) {
				return d
			}
		}
	}
}

// won reports whether d registered the name to the claim in rec itself.
func won(d *events.Decision, rec *kgo.Record) bool {
	return d.Outcome == events.OutcomeRegistered && d.HolderRequestID == d.RequestID &&
		d.ClaimPartition == rec.Partition && d.ClaimOffset == rec.Offset
}

// Registration is who holds a username, as the projection records it.
type Registration struct {
	Username     string    `json:"username"` // as typed in the winning claim
	Canonical    string    `json:"canonical"`
	UserID       string    `json:"user_id"`
	RequestID    string    `json:"request_id"`
	RegisteredAt time.Time `json:"registered_at"`
	// HeldUnderPolicy is the username policy version the name was won
	// under; it is older than the registry's after a policy upgrade.
	HeldUnderPolicy int `json:"held_under_policy,omitempty"`
	// Grandfathered is set for a member of a grandfathered group: holders
	// a policy upgrade found under one key, who all keep their names.
	Grandfathered bool `json:"grandfathered,omitempty"`
	// Members are, for a key held by a grandfathered group, every member
	// (sorted by canonical form); the Registration itself is the first.
	Members []Registration `json:"-"`
}
