package projector

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
)

// outboxRow is a committed decision waiting to be published.
type outboxRow struct {
	id        int64
	partition int32
	key       []byte
	eventType string
	value     []byte
	topic     string // outboxRegistrations (a decision) or outboxClaims (a rename's next step)
}

// The values of the outbox's topic column: which of the registry's topics
// a row goes to (by role; the names are Config.Topics').
const (
	outboxRegistrations = "registrations"
	outboxClaims        = "claims"
)

// publish produces rows to registrations and waits for every
// acknowledgement. The rows stay in the outbox until deleted: at once when
// deleteNow (a relay), otherwise by the next round's transaction (see
// Projector.published). A crash in between publishes the same bytes again
// on the next assignment; consumers dedupe by (request_id,
// claim_partition, claim_offset).
func (p *Projector) publish(ctx context.Context, rows []outboxRow, deleteNow bool) error {
	if len(rows) == 0 {
		return nil
	}
	recs := make([]*kgo.Record, len(rows))
	ids := make([]int64, len(rows))
	for i, r := range rows {
		recs[i] = events.DecisionRecord(r.key, r.partition, r.eventType, r.value)
		recs[i].Topic = p.cfg.Topics.Registrations
		if r.topic == outboxClaims {
			recs[i].Topic, recs[i].Partition = p.cfg.Topics.Claims, events.Partition(r.key, int(p.cfg.Partitions))
		}
		ids[i] = r.id
	}
	if err := p.pub.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("publishing %d decisions: %w", len(recs), err)
	}
	if err := p.failpointFor(FailAfterPublish, p.roundTypes); err != nil {
		return err
	}
	if !deleteNow {
		p.published = append(p.published, ids...)
		return nil
	}
	if _, err := p.pool.Exec(ctx, sqlDeleteOutbox, ids); err != nil {
		return fmt.Errorf("marking %d decisions published: %w", len(ids), err)
	}
	return nil
}

// relay publishes whatever the outbox holds for a partition, in order.
func (p *Projector) relay(ctx context.Context, part int32) error {
	rows, err := p.pool.Query(ctx, sqlPendingOutbox, part)
	if err != nil {
		return fmt.Errorf("reading outbox of partition %d: %w", part, err)
	}
	pending, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (outboxRow, error) {
		o := outboxRow{partition: part}
		return o, r.Scan(&o.id, &o.key, &o.eventType, &o.value, &o.topic)
	})
	if err != nil {
		return fmt.Errorf("reading outbox of partition %d: %w", part, err)
	}
	if len(pending) > 0 {
		p.log.Info("republishing outbox", "partition", part, "decisions", len(pending))
	}
	return p.publish(ctx, pending, true)
}
