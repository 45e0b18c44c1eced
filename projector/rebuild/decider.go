package rebuild

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/projector/internal/projection"
)

// Decider decides claims records again in memory with the projector's own
// rule and fold (projection.Redecider), one partition at a time, and gives
// the decision records a projector would publish for them. It lets a tool
// fill a registry's topics with claims and their decisions without running
// a projector (registry-bench generate), so a rebuild has something to
// rebuild. It remembers the last 16384 first decisions, for the copies
// that answer repeated claims.
type Decider struct {
	partitions int32
	deciders   map[int32]*projection.Redecider
	firsts     *firstDecisions
}

// NewDecider returns a Decider for claims topics of the given partition
// count, starting from empty partitions.
func NewDecider(partitions int32) *Decider {
	return &Decider{partitions: partitions, deciders: map[int32]*projection.Redecider{}, firsts: newFirstDecisions(1 << 14)}
}

// Decide returns the decision records for claims records that were just
// written (with their partitions and offsets), as a projector would
// publish them: per partition in offset order, a copy of the first
// decision for a repeated request_id. Records must come in log order
// across calls.
func (g *Decider) Decide(recs []*kgo.Record) ([]*kgo.Record, error) {
	sorted := slices.Clone(recs)
	slices.SortFunc(sorted, func(a, b *kgo.Record) int {
		return cmp.Or(cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
	})
	out := make([]*kgo.Record, 0, len(recs))
	for _, r := range sorted {
		rd := g.deciders[r.Partition]
		if rd == nil {
			rd = projection.NewRedecider(int(g.partitions))
			g.deciders[r.Partition] = rd
		}
		res, err := rd.Redecide(r)
		if err != nil {
			return nil, err
		}
		d := first{typ: "", value: res.Value}
		if res.Copy {
			id, err := claimRequestID(r)
			if err != nil {
				return nil, err
			}
			if d = g.firsts.get(r.Partition, id); d.value == nil {
				return nil, fmt.Errorf("claims %d/%d repeats request %s, whose decision is no longer remembered", r.Partition, r.Offset, id)
			}
		} else {
			d.typ = res.Decision.Type()
			if res.Change.Entry != nil {
				g.firsts.put(r.Partition, res.Decision.RequestID, d)
			}
		}
		out = append(out, events.DecisionRecord(r.Key, r.Partition, d.typ, d.value))
	}
	return out, nil
}

// claimRequestID returns a readable claims record's request_id, in
// canonical form.
func claimRequestID(r *kgo.Record) (string, error) {
	c, err := events.DecodeClaim(r)
	if err != nil {
		return "", err
	}
	id, err := uuid.Parse(c.RequestID)
	if err != nil {
		return "", err
	}
	return id.String(), nil
}

// firstDecisions remembers the bytes of the last n first decisions, by
// partition and request_id, so a repeated claim can be answered with a
// copy. Retries only repeat recent claims, so a bounded memory suffices.
type firstDecisions struct {
	n     int
	m     map[firstKey]first
	order []firstKey
	pos   int
}

type first struct {
	typ   string
	value []byte
}

type firstKey struct {
	partition int32
	requestID string
}

func newFirstDecisions(n int) *firstDecisions {
	return &firstDecisions{n: n, m: map[firstKey]first{}}
}

func (f *firstDecisions) get(p int32, id string) first { return f.m[firstKey{p, id}] }

func (f *firstDecisions) put(p int32, id string, v first) {
	k := firstKey{p, id}
	if len(f.order) < f.n {
		f.order = append(f.order, k)
	} else {
		delete(f.m, f.order[f.pos])
		f.order[f.pos] = k
		f.pos = (f.pos + 1) % f.n
	}
	f.m[k] = v
}
