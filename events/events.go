package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Topic names: the defaults of Topics. Both topics have the same
// partition count, keep data forever and are never compacted: they are the
// registry's record.
const (
	TopicClaims        = "claims"
	TopicRegistrations = "registrations"
)

// Topics names one registry's two topics. A broker can hold several
// registries, each with its own pair (and its own database). Nothing a
// replay must reproduce depends on the names: a decision's bytes, its
// derived request_id and its partition are the same under any names.
type Topics struct {
	Claims        string // defaults to TopicClaims
	Registrations string // defaults to TopicRegistrations
}

// WithDefaults returns t with the default name for each name left empty.
func (t Topics) WithDefaults() Topics {
	if t.Claims == "" {
		t.Claims = TopicClaims
	}
	if t.Registrations == "" {
		t.Registrations = TopicRegistrations
	}
	return t
}

// Header keys set on every record. The value of HeaderType is one of the
// Type constants; HeaderSchema is the decimal schema version of the body.
const (
	HeaderType   = "event-type"
	HeaderSchema = "schema-version"
)

// Event types, the values of the HeaderType header.
const (
	TypeClaimSubmitted     = "ClaimSubmitted"
	TypeUsernameRegistered = "UsernameRegistered"
	TypeClaimRejected      = "ClaimRejected"
)

// SchemaVersion is the version of the JSON bodies this package writes. A
// reader accepts records without the header as version 1.
const SchemaVersion = 1

// Outcomes, the values of Decision.Outcome.
const (
	OutcomeRegistered = "registered"
	OutcomeRejected   = "rejected"
)

// ClaimSubmitted asks for a username. It is the only event on TopicClaims.
type ClaimSubmitted struct {
	RequestID     string    `json:"request_id"`     // UUID chosen by the client or the API; identifies the request across retries
	UserID        string    `json:"user_id"`        // UUID of the user claiming the name
	Username      string    `json:"username"`       // as typed
	Canonical     string    `json:"canonical"`      // the policy's canonical form
	Key           string    `json:"key"`            // the policy's partition key, equal to the record key
	PolicyVersion int       `json:"policy_version"` // the username policy version that computed Canonical and Key
	SubmittedAt   time.Time `json:"submitted_at"`   // when the API accepted the request; informational only
}

// Decision is the body of both decision events. Outcome says which one:
// "registered" is a UsernameRegistered, "rejected" a ClaimRejected.
//
// A decision is a pure function of the claims before it in its partition,
// so a replay of the claims topic yields the same bytes.
type Decision struct {
	RequestID string `json:"request_id"`
	UserID    string `json:"user_id,omitempty"`   // empty when the claim could not be parsed
	Username  string `json:"username,omitempty"`  // as typed in the claim
	Canonical string `json:"canonical,omitempty"` // empty when the username broke the policy (an invalid claim can still carry it when something else was wrong)
	Outcome   string `json:"outcome"`
	Reason    string `json:"reason,omitempty"`         // set when Outcome is "rejected"
	Detail    string `json:"detail,omitempty"`         // for "invalid" and "request_conflict": why, for a person
	Conflicts string `json:"conflicts_with,omitempty"` // for "taken" and "confusable": the holder's canonical name

	// HolderRequestID is, for "registered", the request that first won the
	// name. It differs from RequestID when a user claims a name it already
	// holds under a new request_id.
	HolderRequestID string `json:"holder_request_id,omitempty"`
	// RegisteredAt is, for "registered", the timestamp of the winning claim's
	// record: taken from the log, so replay reproduces it.
	RegisteredAt *time.Time `json:"registered_at,omitempty"`

	ClaimPartition int32 `json:"claim_partition"` // partition of the claim record that was decided
	ClaimOffset    int64 `json:"claim_offset"`    // offset of the claim record that was decided
	PolicyVersion  int   `json:"policy_version"`  // the policy version the projector decided with
}

// Type is the event type of d, for the HeaderType header.
func (d *Decision) Type() string {
	if d.Outcome == OutcomeRegistered {
		return TypeUsernameRegistered
	}
	return TypeClaimRejected
}

// ErrNotAnEvent is wrapped by the Decode functions when a record is not the
// event they were asked for, or its body does not parse.
var ErrNotAnEvent = errors.New("not a registry event")

// ClaimRecord builds the TopicClaims record for c, keyed by c.Key.
func ClaimRecord(c *ClaimSubmitted) (*kgo.Record, error) {
	body, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encoding claim %s: %w", c.RequestID, err)
	}
	return newRecord(TopicClaims, []byte(c.Key), TypeClaimSubmitted, body), nil
}

// DecisionValue encodes d as the body of its registrations record. The
// projector stores these exact bytes, so every copy it publishes is
// identical.
func DecisionValue(d *Decision) ([]byte, error) {
	body, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("encoding decision for %s: %w", d.RequestID, err)
	}
	return body, nil
}

// DecisionRecord builds the TopicRegistrations record for an encoded
// decision, on the same partition as the claim it decides.
func DecisionRecord(key []byte, partition int32, eventType string, body []byte) *kgo.Record {
	r := newRecord(TopicRegistrations, key, eventType, body)
	r.Partition = partition
	return r
}

func newRecord(topic string, key []byte, eventType string, body []byte) *kgo.Record {
	return &kgo.Record{
		Topic: topic,
		Key:   key,
		Value: body,
		Headers: []kgo.RecordHeader{
			{Key: HeaderType, Value: []byte(eventType)},
			{Key: HeaderSchema, Value: []byte(strconv.Itoa(SchemaVersion))},
		},
	}
}

// DecodeClaim parses a TopicClaims record. Unknown JSON fields are ignored
// (later schema versions may add some); a wrong event type, a newer schema
// version or a body that is not JSON wraps ErrNotAnEvent.
func DecodeClaim(r *kgo.Record) (*ClaimSubmitted, error) {
	if err := checkHeaders(r, TypeClaimSubmitted); err != nil {
		return nil, err
	}
	var c ClaimSubmitted
	if err := json.Unmarshal(r.Value, &c); err != nil {
		return nil, fmt.Errorf("%w: claim body: %v", ErrNotAnEvent, err)
	}
	return &c, nil
}

// DecodeDecision parses a TopicRegistrations record.
func DecodeDecision(r *kgo.Record) (*Decision, error) {
	if err := checkHeaders(r, TypeUsernameRegistered, TypeClaimRejected); err != nil {
		return nil, err
	}
	var d Decision
	if err := json.Unmarshal(r.Value, &d); err != nil {
		return nil, fmt.Errorf("%w: decision body: %v", ErrNotAnEvent, err)
	}
	if d.RequestID == "" || (d.Outcome != OutcomeRegistered && d.Outcome != OutcomeRejected) {
		return nil, fmt.Errorf("%w: decision lacks request_id or outcome", ErrNotAnEvent)
	}
	return &d, nil
}

func checkHeaders(r *kgo.Record, types ...string) error {
	typ, schema := header(r, HeaderType), header(r, HeaderSchema)
	if !slices.Contains(types, typ) {
		return fmt.Errorf("%w: event type %q, want one of %q", ErrNotAnEvent, typ, types)
	}
	if schema == "" {
		return nil
	}
	v, err := strconv.Atoi(schema)
	if err != nil || v < 1 || v > SchemaVersion {
		return fmt.Errorf("%w: schema version %q, this build reads 1..%d", ErrNotAnEvent, schema, SchemaVersion)
	}
	return nil
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// Partition is the partition a key belongs to among n: murmur2 of the key
// bytes, the sign bit masked, modulo n. It is what Kafka's Java client and
// franz-go's default partitioner compute; librdkafka's default (CRC32)
// differs and must be configured to murmur2_random.
func Partition(key []byte, n int) int32 {
	return int32(partitioner.Partition(&kgo.Record{Key: key}, n))
}

var partitioner = kgo.StickyKeyPartitioner(nil).ForTopic(TopicClaims)
