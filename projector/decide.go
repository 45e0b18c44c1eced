package projector

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims"
	"github.com/usernameregistry/registry/events"
)

// positionNamespace derives a request_id for a claim record that carries no
// usable one, from its place in the log, so that the decision (and its
// ledger row) is the same live and on replay.
var positionNamespace = uuid.MustParse("5b1f4a36-2f0e-4c0a-9d55-8a2b2f6f7c11")

// claimInput is one claims record, parsed and checked against the policy.
type claimInput struct {
	partition int32
	offset    int64
	timestamp time.Time
	key       []byte

	requestID string // a UUID in canonical form: the claim's, or derived from the position
	userID    string
	username  string
	caller    string          // the service that wrote the claim, as recorded in it
	name      claims.Username // valid only when invalid == ""
	invalid   string          // why the claim is invalid; empty when it is valid
}

// parseClaim turns a record into a claimInput. It never fails: whatever is
// wrong with the record becomes the reason it is invalid. The checks depend
// only on the record, the partition count and the pinned policy, so a
// replay reaches the same verdict.
func parseClaim(r *kgo.Record, partitions int) claimInput {
	in := claimInput{partition: r.Partition, offset: r.Offset, timestamp: r.Timestamp.UTC(), key: r.Key}
	c, err := events.DecodeClaim(r)
	if err != nil {
		in.requestID = positionID(r.Partition, r.Offset)
		in.invalid = fmt.Sprintf("claim record could not be read: %v", err)
		return in
	}
	in.userID, in.username, in.caller = storable(c.UserID), storable(c.Username), storable(c.Caller)
	id, err := uuid.Parse(c.RequestID)
	if err != nil {
		in.requestID = positionID(r.Partition, r.Offset)
		in.invalid = fmt.Sprintf("request_id %q is not a UUID", c.RequestID)
		return in
	}
	in.requestID = id.String()
	in.invalid = checkClaim(&in, c, r, partitions)
	return in
}

// checkClaim validates a decoded claim and fills in.name; it returns why the
// claim is invalid, or "".
func checkClaim(in *claimInput, c *events.ClaimSubmitted, r *kgo.Record, partitions int) string {
	uid, err := uuid.Parse(c.UserID)
	if err != nil {
		return fmt.Sprintf("user_id %q is not a UUID", c.UserID)
	}
	in.userID = uid.String()
	name, err := claims.Normalize(c.Username)
	if err != nil {
		return err.Error()
	}
	in.name = name
	switch {
	case c.PolicyVersion != claims.PolicyVersion:
		return fmt.Sprintf("claim was made under username policy version %d; this registry decides under version %d", c.PolicyVersion, claims.PolicyVersion)
	case c.Canonical != name.Canonical || c.Key != name.Key || string(r.Key) != name.Key:
		return "claim's canonical form or key does not match the username policy"
	case events.Partition(r.Key, partitions) != r.Partition:
		return fmt.Sprintf("claim is in partition %d but its key belongs in partition %d: produce with the murmur2 partitioner", r.Partition, events.Partition(r.Key, partitions))
	}
	return ""
}

// storable replaces NUL, which PostgreSQL text cannot hold, so a claim
// carrying one is decided invalid instead of failing its batch forever.
// The same input always maps to the same string, so replay agrees.
func storable(s string) string {
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}

func positionID(partition int32, offset int64) string {
	return uuid.NewSHA1(positionNamespace, fmt.Appendf(nil, "%s/%d/%d", events.TopicClaims, partition, offset)).String()
}

// ledgerEntry is a request_id's first decision, as stored in the ledger.
type ledgerEntry struct {
	requestID string
	userID    string
	username  string
	decision  *events.Decision
	value     []byte // the decision's exact bytes
}

// holder is who holds a name, as stored in the usernames projection.
type holder struct {
	canonical    string
	key          string
	username     string
	userID       string
	requestID    string
	partition    int32
	offset       int64
	registeredAt time.Time
}

// state is what decisions in one partition depend on: the ledger and the
// holders. A batch loads the entries its claims touch, then decides in log
// order, adding to the state as it goes.
type state struct {
	requests map[string]*ledgerEntry // by request_id
	holders  map[string]*holder      // by key
}

func newState() *state {
	return &state{requests: map[string]*ledgerEntry{}, holders: map[string]*holder{}}
}

// outcome is what deciding one claim produced. entry is set when the
// decision is the request_id's first, newHolder when the claim won a name.
type outcome struct {
	decision  *events.Decision
	value     []byte
	entry     *ledgerEntry
	newHolder *holder
}

// errDecision is returned only for a decision that cannot be encoded,
// which is a bug, not a property of the claim.
var errDecision = errors.New("encoding decision")

// decide returns the decision for in given st, and applies it to st. It is
// the registry's only decision rule; the projector and the replay audit
// both call it.
func decide(st *state, in *claimInput) (outcome, error) {
	if prev, ok := st.requests[in.requestID]; ok {
		if prev.userID == in.userID && prev.username == in.username {
			return outcome{decision: prev.decision, value: prev.value}, nil
		}
		return encode(in.rejection(events.ReasonRequestConflict, "request_id was already used with a different username or user_id", ""))
	}
	d, h := decideFresh(st, in)
	out, err := encode(d)
	if err != nil {
		return out, err
	}
	out.entry = &ledgerEntry{requestID: in.requestID, userID: in.userID, username: in.username, decision: d, value: out.value}
	st.requests[in.requestID] = out.entry
	if h != nil {
		out.newHolder = h
		st.holders[h.key] = h
	}
	return out, nil
}

// decideFresh decides a request_id seen for the first time. It returns the
// new holder when the claim wins the name.
func decideFresh(st *state, in *claimInput) (*events.Decision, *holder) {
	if in.invalid != "" {
		return in.rejection(events.ReasonInvalid, in.invalid, ""), nil
	}
	if claims.Reserved(in.name) {
		return in.rejection(events.ReasonReserved, "", ""), nil
	}
	h, held := st.holders[in.name.Key]
	switch {
	case !held:
		h = &holder{canonical: in.name.Canonical, key: in.name.Key, username: in.username, userID: in.userID,
			requestID: in.requestID, partition: in.partition, offset: in.offset, registeredAt: in.timestamp}
		return in.registration(h), h
	case h.userID == in.userID && h.canonical == in.name.Canonical:
		return in.registration(h), nil
	case h.canonical == in.name.Canonical:
		return in.rejection(events.ReasonTaken, "", h.canonical), nil
	default:
		return in.rejection(events.ReasonConfusable, "", h.canonical), nil
	}
}

func (in *claimInput) base(outcome string) *events.Decision {
	return &events.Decision{
		RequestID: in.requestID, UserID: in.userID, Username: in.username, Canonical: in.name.Canonical, Caller: in.caller,
		Outcome: outcome, ClaimPartition: in.partition, ClaimOffset: in.offset, PolicyVersion: claims.PolicyVersion,
	}
}

func (in *claimInput) registration(h *holder) *events.Decision {
	d := in.base(events.OutcomeRegistered)
	at := h.registeredAt
	d.HolderRequestID, d.RegisteredAt = h.requestID, &at
	return d
}

func (in *claimInput) rejection(reason, detail, conflictsWith string) *events.Decision {
	d := in.base(events.OutcomeRejected)
	d.Reason, d.Detail, d.Conflicts = reason, detail, conflictsWith
	return d
}

func encode(d *events.Decision) (outcome, error) {
	v, err := events.DecisionValue(d)
	if err != nil {
		return outcome{}, fmt.Errorf("%w: %w", errDecision, err)
	}
	return outcome{decision: d, value: v}, nil
}
