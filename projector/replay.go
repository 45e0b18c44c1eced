package projector

import (
	"hash/maphash"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
)

// Redecider decides the claims of one partition again, in log order, with
// the projector's own rule (decide), for the replay audit and for tools
// that write decisions straight to the topics. It keeps the partition's
// state itself, in memory, in a compact form: per request_id a 64-bit hash
// of the first decision's payload (user_id, username), and per held key
// the little a later decision quotes (canonical form, holder's user_id and
// request_id, registered_at). About 150 bytes per holder and 60 per
// request, rather than the projector's full ledger entries.
//
// Two payloads of one request_id with equal hashes would make a
// request_conflict look like a copy; with 64 bits that is a chance of
// about 2^-64 per repeated request_id.
//
// A Redecider is not safe for concurrent use. Use one per partition.
type Redecider struct {
	rules    rules
	seed     maphash.Seed
	requests map[uuid.UUID]uint64     // request_id -> hash of the first decision's payload
	holders  map[string]compactHolder // key -> holder
	st       state                    // reused for each call: holds at most the entries one claim touches
	entry    ledgerEntry              // the materialised ledger entry for st
	holder   holder                   // the materialised holder for st
}

type compactHolder struct {
	canonical    string
	userID       uuid.UUID
	requestID    uuid.UUID
	registeredAt int64 // Unix nanoseconds, UTC
}

// Redecision is what Redecide decided for one claims record.
type Redecision struct {
	// Copy is set when the record repeats a decided request_id with the
	// same payload: its decision is a copy of the first one (which names
	// the first record), so Decision and Value are nil.
	Copy bool
	// Decision and Value are the new decision and its exact bytes, as the
	// projector would publish them; nil for a copy.
	Decision *events.Decision
	Value    []byte
	// Stored is set when the decision goes in the request ledger: it is
	// the request_id's first, which every decision but a copy and a
	// request_conflict is.
	Stored bool
	// Holding is set when the claim won a name.
	Holding *Holding
	// PolicyVersion is the username policy version the claim says it was
	// made under; 0 when the record could not be read.
	PolicyVersion int
}

// Holding is a usernames row: who holds a name since which claim.
type Holding struct {
	Canonical, Key, Username, UserID, RequestID string
	Partition                                   int32
	Offset                                      int64
	RegisteredAt                                time.Time
}

// NewRedecider returns a Redecider for claims topics of the given partition
// count, starting from an empty partition, deciding under the latest
// username policy (that of a new registry).
func NewRedecider(partitions int) *Redecider {
	return NewPolicyRedecider(partitions, username.MustVersion(username.Latest), false)
}

// NewPolicyRedecider is NewRedecider deciding under the given policy. With
// translate, claims made under another policy version are decided as if
// they had been made under this one, from the username as typed, without
// the key and partition checks: what the replay's --policy-version shows.
// Without it, such claims are invalid, as the projector decides them.
func NewPolicyRedecider(partitions int, policy *username.Policy, translate bool) *Redecider {
	return &Redecider{
		rules: rules{partitions: partitions, policy: policy, translate: translate}, seed: maphash.MakeSeed(),
		requests: map[uuid.UUID]uint64{}, holders: map[string]compactHolder{},
		st: state{requests: map[string]*ledgerEntry{}, holders: map[string]*holder{}},
	}
}

// Redecide decides rec, the partition's next claims record, exactly as the
// projector would after every record before it, and remembers the result
// for the records after it.
func (r *Redecider) Redecide(rec *kgo.Record) (Redecision, error) {
	in := parseClaim(rec, r.rules)
	r.load(&in)
	out, err := decide(&r.st, &in)
	if err != nil {
		return Redecision{}, err
	}
	version := r.rules.policy.Version()
	if in.invalid != "" || r.rules.translate { // read the version the checks did not keep
		version = 0
		if c, err := events.DecodeClaim(rec); err == nil {
			version = c.PolicyVersion
		}
	}
	if out.entry == nil && out.decision == nil {
		return Redecision{Copy: true, PolicyVersion: version}, nil
	}
	res := Redecision{Decision: out.decision, Value: out.value, Stored: out.entry != nil, PolicyVersion: version}
	if out.entry != nil {
		r.requests[uuid.MustParse(in.requestID)] = r.payloadHash(in.userID, in.username)
	}
	if h := out.newHolder; h != nil {
		r.holders[h.key] = compactHolder{canonical: h.canonical, userID: uuid.MustParse(h.userID),
			requestID: uuid.MustParse(h.requestID), registeredAt: h.registeredAt.UnixNano()}
		res.Holding = &Holding{Canonical: h.canonical, Key: h.key, Username: h.username, UserID: h.userID,
			RequestID: h.requestID, Partition: h.partition, Offset: h.offset, RegisteredAt: h.registeredAt}
	}
	return res, nil
}

// load puts into r.st the ledger entry and holder that in can depend on,
// as the projector's loadState does for a batch. A stored entry whose
// payload matches in's is given in's own strings (so decide sees them
// equal and returns a copy, whose bytes the caller does not need); one
// that does not match gets strings that differ from in's (NUL never occurs
// in a stored payload, see storable).
func (r *Redecider) load(in *claimInput) {
	clear(r.st.requests)
	clear(r.st.holders)
	if id, err := uuid.Parse(in.requestID); err == nil {
		if h, ok := r.requests[id]; ok {
			r.entry = ledgerEntry{requestID: in.requestID, userID: in.userID, username: in.username}
			if h != r.payloadHash(in.userID, in.username) {
				r.entry.userID += "\x00"
			}
			r.st.requests[in.requestID] = &r.entry
		}
	}
	if in.invalid != "" {
		return
	}
	if c, ok := r.holders[in.name.Key]; ok {
		r.holder = holder{canonical: c.canonical, key: in.name.Key, userID: c.userID.String(),
			requestID: c.requestID.String(), registeredAt: time.Unix(0, c.registeredAt).UTC()}
		r.st.holders[in.name.Key] = &r.holder
	}
}

func (r *Redecider) payloadHash(userID, username string) uint64 {
	var h maphash.Hash
	h.SetSeed(r.seed)
	h.WriteString(userID)
	h.WriteByte(0)
	h.WriteString(username)
	return h.Sum64()
}

// Len reports how many request_ids and held names the Redecider remembers.
func (r *Redecider) Len() (requests, holders int) { return len(r.requests), len(r.holders) }

// latestPolicy is the policy LedgerIdentity parses with; the request_id,
// user_id and username it returns do not depend on the policy.
var latestPolicy = username.MustVersion(username.Latest)

// LedgerIdentity returns what the request ledger would record for a
// claims record, as the projector parses it: the request_id (derived from
// the position when the claim has no usable one), the user_id and the
// username. A record whose three equal a ledger row of its partition is a
// repeat, decided as a copy of that row's decision.
func LedgerIdentity(rec *kgo.Record, partitions int) (requestID, userID, username string) {
	in := parseClaim(rec, rules{partitions: partitions, policy: latestPolicy, translate: true})
	return in.requestID, in.userID, in.username
}
