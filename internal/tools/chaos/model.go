package chaos

import (
	"fmt"
	"slices"
	"strings"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
)

// Position is a claims record's place in the log.
type Position struct {
	Partition int32
	Offset    int64
}

func (p Position) String() string { return fmt.Sprintf("claims/%d@%d", p.Partition, p.Offset) }

// Verdict is the part of a decision the model predicts: everything that
// depends on the log, nothing that is prose (detail) or copied from the
// record (registered_at).
type Verdict struct {
	RequestID string
	UserID    string
	Username  string
	Canonical string
	Outcome   string
	Reason    string
	Conflicts string
	Holder    string // holder_request_id, for registered
	At        Position
}

func verdictOf(d *events.Decision) Verdict {
	return Verdict{RequestID: d.RequestID, UserID: d.UserID, Username: d.Username, Canonical: d.Canonical,
		Outcome: d.Outcome, Reason: d.Reason, Conflicts: d.Conflicts, Holder: d.HolderRequestID,
		At: Position{d.ClaimPartition, d.ClaimOffset}}
}

func (v Verdict) String() string {
	s := fmt.Sprintf("%s %s request=%s user=%s name=%q", v.At, v.Outcome, v.RequestID, v.UserID, v.Username)
	if v.Reason != "" {
		s += " reason=" + v.Reason
	}
	if v.Conflicts != "" {
		s += " conflicts_with=" + v.Conflicts
	}
	if v.Holder != "" && v.Holder != v.RequestID {
		s += " holder=" + v.Holder
	}
	return s
}

// Holding is one row of a usernames projection.
type Holding struct {
	Canonical string
	Key       string
	UserID    string
	RequestID string
	At        Position
}

// LedgerKey is the request ledger's primary key.
type LedgerKey struct {
	RequestID string
	Partition int32
}

// Model is the reference: a plain in-memory replay of the claims log that
// decides every record by the rules in docs/design.md, written apart from
// the projector so that a bug there is not repeated here.
type Model struct {
	// Emitted is, per claims record, the decision the registry must
	// publish for it: its own, a copy of an earlier one for the same
	// request (At names the earlier record), or request_conflict.
	Emitted map[Position]Verdict
	// Ledger is the first decision per request_id and partition.
	Ledger map[LedgerKey]Verdict
	// Holders is who holds each canonical name.
	Holders map[string]Holding
	// RequestIDs is each record's request_id, derived from the position
	// when the record has no usable one.
	RequestIDs map[Position]string
}

// claimRecord is a claims record as the model reads it.
type claimRecord struct {
	at        Position
	requestID string
	userID    string
	username  string
	name      username.Username
	invalid   bool
}

// Replay runs the model over claims records (in any order; each partition
// is replayed in offset order).
func Replay(recs []*kgo.Record, partitions int) *Model {
	sorted := slices.Clone(recs)
	slices.SortFunc(sorted, func(a, b *kgo.Record) int {
		if a.Partition != b.Partition {
			return int(a.Partition - b.Partition)
		}
		return int(a.Offset - b.Offset)
	})
	m := &Model{Emitted: map[Position]Verdict{}, Ledger: map[LedgerKey]Verdict{}, Holders: map[string]Holding{}, RequestIDs: map[Position]string{}}
	byKey := map[string]Holding{}
	for _, r := range sorted {
		c := readClaim(r, partitions)
		m.RequestIDs[c.at] = c.requestID
		m.decide(c, byKey)
	}
	return m
}

func (m *Model) decide(c claimRecord, byKey map[string]Holding) {
	lk := LedgerKey{c.requestID, c.at.Partition}
	if prev, ok := m.Ledger[lk]; ok {
		if prev.UserID == c.userID && prev.Username == c.username {
			m.Emitted[c.at] = prev
			return
		}
		m.Emitted[c.at] = Verdict{RequestID: c.requestID, UserID: c.userID, Username: c.username, Canonical: c.name.Canonical,
			Outcome: events.OutcomeRejected, Reason: events.ReasonRequestConflict, At: c.at}
		return
	}
	v := Verdict{RequestID: c.requestID, UserID: c.userID, Username: c.username, Canonical: c.name.Canonical,
		Outcome: events.OutcomeRejected, At: c.at}
	h, held := byKey[c.name.Key]
	switch {
	case c.invalid:
		v.Reason = events.ReasonInvalid
	case username.Reserved(c.name):
		v.Reason = events.ReasonReserved
	case !held:
		h = Holding{Canonical: c.name.Canonical, Key: c.name.Key, UserID: c.userID, RequestID: c.requestID, At: c.at}
		byKey[h.Key], m.Holders[h.Canonical] = h, h
		v.Outcome, v.Holder = events.OutcomeRegistered, c.requestID
	case h.UserID == c.userID && h.Canonical == c.name.Canonical:
		v.Outcome, v.Holder = events.OutcomeRegistered, h.RequestID
	case h.Canonical == c.name.Canonical:
		v.Reason, v.Conflicts = events.ReasonTaken, h.Canonical
	default:
		v.Reason, v.Conflicts = events.ReasonConfusable, h.Canonical
	}
	m.Ledger[lk], m.Emitted[c.at] = v, v
}

// positionNamespace and the "claims/<partition>/<offset>" name are the
// wire contract for claims without a usable request_id (docs/design.md,
// Poison records).
var positionNamespace = uuid.MustParse("5b1f4a36-2f0e-4c0a-9d55-8a2b2f6f7c11")

func positionID(at Position) string {
	return uuid.NewSHA1(positionNamespace, fmt.Appendf(nil, "claims/%d/%d", at.Partition, at.Offset)).String()
}

// readClaim applies the validity rules of docs/design.md to a record.
func readClaim(r *kgo.Record, partitions int) claimRecord {
	c := claimRecord{at: Position{r.Partition, r.Offset}, invalid: true}
	sub, err := events.DecodeClaim(r)
	if err != nil {
		c.requestID = positionID(c.at)
		return c
	}
	c.userID, c.username = strings.ReplaceAll(sub.UserID, "\x00", "\uFFFD"), strings.ReplaceAll(sub.Username, "\x00", "\uFFFD")
	id, err := uuid.Parse(sub.RequestID)
	if err != nil {
		c.requestID = positionID(c.at)
		return c
	}
	c.requestID = id.String()
	uid, err := uuid.Parse(sub.UserID)
	if err != nil {
		return c
	}
	c.userID = uid.String()
	if c.name, err = username.Normalize(sub.Username); err != nil {
		return c
	}
	c.invalid = sub.PolicyVersion != username.Latest ||
		sub.Canonical != c.name.Canonical || sub.Key != c.name.Key || string(r.Key) != c.name.Key ||
		events.Partition(r.Key, partitions) != r.Partition
	return c
}
