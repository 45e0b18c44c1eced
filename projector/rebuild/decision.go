package rebuild

import (
	"bytes"
	"fmt"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/projector/internal/projection"
)

// decision is one registrations record as the projection needs it: the
// decision, its exact bytes (the ledger stores them), and the change it
// makes to the projection when it is the first at its position.
type decision struct {
	*events.Decision
	value  []byte
	change projection.Change
}

// decodeDecision reads a registrations record the way every consumer of
// the topic must (events.DecodeDecision: a decision event type, schema
// versions 1 to events.SchemaVersion) and folds it (projection.Fold, the
// projector's own fold). A record it cannot use is an error that names
// why; the caller counts it and goes on.
func decodeDecision(r *kgo.Record) (*decision, error) {
	d, err := events.DecodeDecision(r)
	if err != nil {
		return nil, err
	}
	switch {
	case d.ClaimPartition != r.Partition:
		return nil, fmt.Errorf("decision for claims partition %d found in registrations partition %d", d.ClaimPartition, r.Partition)
	case uuid.Validate(d.RequestID) != nil:
		return nil, fmt.Errorf("request_id %q is not a UUID", d.RequestID)
	}
	// The bytes are copied: a slice of r.Value would keep the whole fetch
	// response it came from alive while the row waits in a COPY batch.
	dec := &decision{Decision: d, value: bytes.Clone(r.Value)}
	if dec.change, err = projection.Fold(d, dec.value, bytes.Clone(r.Key)); err != nil {
		return nil, err
	}
	return dec, nil
}
