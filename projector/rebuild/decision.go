package rebuild

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
)

// decision is what the projection needs of one registrations record: the
// decision's fields, its exact bytes (the ledger stores them) and the
// record key (the claim's key, the usernames.key of a win).
type decision struct {
	RequestID       string     `json:"request_id"`
	UserID          string     `json:"user_id"`
	Username        string     `json:"username"`
	Canonical       string     `json:"canonical"`
	Outcome         string     `json:"outcome"`
	Reason          string     `json:"reason"`
	HolderRequestID string     `json:"holder_request_id"`
	RegisteredAt    *time.Time `json:"registered_at"`
	ClaimPartition  int32      `json:"claim_partition"`
	ClaimOffset     int64      `json:"claim_offset"`

	value []byte
	key   []byte
}

// win reports whether d is the decision of the claim that won its name:
// a registration naming itself as the holder. A holder claiming its own
// name again under another request_id gets a registration naming the
// original holder, which adds no usernames row.
func (d *decision) win() bool {
	return d.Outcome == events.OutcomeRegistered && d.HolderRequestID == d.RequestID
}

// stored reports whether d goes in the request ledger: every first
// decision does; request_conflict never does.
func (d *decision) stored() bool { return d.Reason != events.ReasonRequestConflict }

// decodeDecision reads a registrations record the way every consumer of
// the topic must (events.DecodeDecision's header and body rules), keeping
// only what the projection needs. A record it cannot use is an error
// that names why; the caller counts it and goes on.
func decodeDecision(r *kgo.Record) (*decision, error) {
	if err := checkHeaders(r); err != nil {
		return nil, err
	}
	// The bytes are copied: a slice of r.Value would keep the whole fetch
	// response it came from alive while the row waits in a COPY batch.
	d := &decision{value: bytes.Clone(r.Value), key: r.Key}
	if err := json.Unmarshal(r.Value, d); err != nil {
		return nil, fmt.Errorf("%w: decision body: %v", events.ErrNotAnEvent, err)
	}
	switch {
	case d.RequestID == "" || (d.Outcome != events.OutcomeRegistered && d.Outcome != events.OutcomeRejected):
		return nil, fmt.Errorf("%w: decision lacks request_id or outcome", events.ErrNotAnEvent)
	case d.ClaimPartition != r.Partition:
		return nil, fmt.Errorf("decision for claims partition %d found in registrations partition %d", d.ClaimPartition, r.Partition)
	case uuid.Validate(d.RequestID) != nil:
		return nil, fmt.Errorf("request_id %q is not a UUID", d.RequestID)
	case d.win() && (d.RegisteredAt == nil || d.Canonical == "" || len(r.Key) == 0 || uuid.Validate(d.UserID) != nil):
		return nil, fmt.Errorf("registration of %q lacks registered_at, canonical, key or a UUID user_id", d.RequestID)
	}
	return d, nil
}

// checkHeaders applies events' header rules: a decision event type, and a
// schema version this build reads (a missing header counts as 1).
func checkHeaders(r *kgo.Record) error {
	var typ, schema string
	for _, h := range r.Headers {
		switch h.Key {
		case events.HeaderType:
			typ = string(h.Value)
		case events.HeaderSchema:
			schema = string(h.Value)
		}
	}
	if typ != events.TypeUsernameRegistered && typ != events.TypeClaimRejected {
		return fmt.Errorf("%w: event type %q", events.ErrNotAnEvent, typ)
	}
	if schema != "" && schema != strconv.Itoa(events.SchemaVersion) {
		return fmt.Errorf("%w: schema version %q, this build reads 1", events.ErrNotAnEvent, schema)
	}
	return nil
}
