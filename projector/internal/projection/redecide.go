package projection

import (
	"hash/maphash"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
)

// Redecider decides the claims of one partition again, in log order, with
// the projector's own rule (Decide) and fold, for the replay audit and for
// the generator that writes decisions straight to the topics. It keeps the
// partition's state itself, in memory, in a compact form: per request_id
// a 64-bit hash of the first decision's payload (user_id, username), and
// per held key the little a later decision quotes (canonical form,
// holder's user_id and request_id, registered_at). About 150 bytes per
// holder and 60 per request, rather than the projector's full ledger
// entries.
//
// Two payloads of one request_id with equal hashes would make a
// request_conflict look like a copy; with 64 bits that is a chance of
// about 2^-64 per repeated request_id.
//
// A Redecider is not safe for concurrent use. Use one per partition.
type Redecider struct {
	rules    Rules
	seed     maphash.Seed
	requests map[uuid.UUID]uint64     // request_id -> hash of the first decision's payload
	holders  map[string]compactHolder // key -> holder
	keys     *events.AdminKeys        // verifies administrative commands
	// The rest of the state is kept whole: holds, runtime reservations,
	// rename locks, and the ledger entries of renames (step 3 reads its
	// rename's first decision). There are few of each.
	holds    map[string]*Hold
	reserved map[string]*Reservation
	locks    map[string]*Lock
	renames  map[string]*Entry
	// The policy upgrade: grandfathered groups, and the partition's
	// policy state with the carried entries staged (st.Apply keeps it).
	members map[string][]*Holder
	upgrade State
	st      State  // reused for each call: holds at most the entries one claim touches
	entry   Entry  // the materialised ledger entry for st
	holder  Holder // the materialised holder for st
}

type compactHolder struct {
	canonical    string
	userID       uuid.UUID
	requestID    uuid.UUID
	registeredAt int64 // Unix nanoseconds, UTC
	// refused is, for a carried name the policy refuses, the name as
	// typed: what tells whether it has a shadow (shadowFollowUp). Empty
	// for every other holder.
	refused string
}

// compact is h in the Redecider's compact form.
func compact(h *Holder) compactHolder {
	c := compactHolder{canonical: h.Canonical, userID: uuid.MustParse(h.UserID), requestID: uuid.MustParse(h.RequestID),
		registeredAt: h.RegisteredAt.UnixNano()}
	if h.Invalid {
		c.refused = h.Username
	}
	return c
}

// Redecision is what Redecide decided for one claims record.
type Redecision struct {
	Outcome
	// PolicyVersion is the username policy version the claim says it was
	// made under; 0 when the record could not be read.
	PolicyVersion int
}

// NewRedecider returns a Redecider for claims topics of the given partition
// count, starting from an empty partition, deciding under the latest
// username policy (that of a new registry).
//
// Administrative commands are checked against keys as the projector
// checks them (AdminProblem); nil keys refuse them all, as a projector
// without keys does.
func NewRedecider(partitions int, keys ...*events.AdminKeys) *Redecider {
	return NewPolicyRedecider(partitions, username.MustVersion(username.Latest), false, keys...)
}

// NewPolicyRedecider is NewRedecider deciding under the given policy. With
// translate, claims made under another policy version are decided as if
// they had been made under this one, from the username as typed, without
// the key and partition checks: what the replay's --policy-version shows.
// Without it, such claims are invalid, as the projector decides them.
func NewPolicyRedecider(partitions int, policy *username.Policy, translate bool, keys ...*events.AdminKeys) *Redecider {
	return &Redecider{
		rules: Rules{Partitions: partitions, Policy: policy, Translate: translate}, seed: maphash.MakeSeed(), keys: firstKeys(keys),
		requests: map[uuid.UUID]uint64{}, holders: map[string]compactHolder{},
		holds: map[string]*Hold{}, reserved: map[string]*Reservation{}, locks: map[string]*Lock{}, renames: map[string]*Entry{},
		members: map[string][]*Holder{}, upgrade: State{Version: policy.Version()},
		st: *NewState(),
	}
}

// Redecide decides rec, the partition's next claims record, exactly as the
// projector would after every record before it, and remembers the result
// for the records after it. For a copy, Decision and Value are nil (the
// compact state does not keep the first decision's bytes).
func (r *Redecider) Redecide(rec *kgo.Record) (Redecision, error) {
	in := Parse(rec, r.rules)
	if in.Admin() && in.Invalid == "" {
		in.Invalid = AdminProblem(r.keys, rec)
	}
	r.load(&in)
	out, err := Decide(&r.st, &in)
	if err != nil {
		return Redecision{}, err
	}
	version := r.rules.Policy.Version()
	if in.Invalid != "" || r.rules.Translate { // read the version the checks did not keep
		version = 0
		if c, err := events.DecodeClaim(rec); err == nil {
			version = c.PolicyVersion
		}
	}
	if out.Copy {
		return Redecision{Outcome: Outcome{Copy: true}, PolicyVersion: version}, nil
	}
	r.remember(out.Change)
	if err := r.rememberUpgrade(out.Change); err != nil {
		return Redecision{}, err
	}
	return Redecision{Outcome: out, PolicyVersion: version}, nil
}

// remember keeps what c changed for the records after it.
func (r *Redecider) remember(c Change) {
	if e := c.Entry; e != nil {
		r.requests[uuid.MustParse(e.RequestID)] = r.payloadHash(e.UserID, e.Username, e.Decision.Command, e.Decision.ToUsername)
		if e.Decision.Command == events.CommandRename {
			r.renames[e.RequestID] = e
		}
	}
	if _, group := r.members[c.Key]; group || len(r.st.Members[c.Key]) > 0 {
		if ms := r.st.Members[c.Key]; len(ms) > 0 { // st.Apply changed the group
			r.members[c.Key] = ms
		} else {
			delete(r.members, c.Key)
		}
	} else if c.DropHolder {
		delete(r.holders, c.Key)
	}
	if h := c.Holder; h != nil && !h.Grandfathered {
		r.holders[h.Key] = compact(h)
	}
	setOrDrop(r.holds, c.Key, c.Hold, c.DropHold)
	setOrDrop(r.reserved, c.Key, c.Reservation, c.DropReservation)
	setOrDrop(r.locks, c.Key, c.Lock, c.DropLock)
}

// Upgraded reports whether the partition has activated a policy version
// (the records after it may carry older versions, decided
// policy_upgrading); Version is the version it decides under now.
func (r *Redecider) Upgraded() bool { return r.upgrade.Upgraded }

// Version is the policy version the partition decides under now.
func (r *Redecider) Version() int { return r.rules.Policy.Version() }

// rememberUpgrade keeps the partition's policy state, and after an
// activation takes the partition's new entries from st (State.Activate
// built them there) and decides the records after it under the new
// version.
func (r *Redecider) rememberUpgrade(c Change) error {
	r.upgrade.Version, r.upgrade.Upgraded, r.upgrade.FrozenTo = r.st.Version, r.st.Upgraded, r.st.FrozenTo
	r.upgrade.Staged, r.upgrade.StagedEntries = r.st.Staged, r.st.StagedEntries
	if c.Activate == 0 {
		return nil
	}
	policy, err := username.ForVersion(c.Activate)
	if err != nil {
		return err
	}
	r.rules.Policy, r.rules.Upgraded = policy, true
	clear(r.holders)
	clear(r.members)
	clear(r.holds)
	clear(r.reserved)
	clear(r.locks)
	for k, h := range r.st.Holders {
		r.holders[k] = compact(h)
	}
	for k, ms := range r.st.Members {
		r.members[k] = ms
	}
	for k, v := range r.st.Holds {
		r.holds[k] = v
	}
	for k, v := range r.st.Reserved {
		r.reserved[k] = v
	}
	return nil
}

func setOrDrop[V any](m map[string]*V, key string, v *V, drop bool) {
	if drop {
		delete(m, key)
	}
	if v != nil {
		m[key] = v
	}
}

// load puts into r.st the ledger entry and holder that in can depend on,
// as the projector's loadStates does for a round. A stored entry whose
// payload matches in's is given in's own strings (so Decide sees them
// equal and returns a copy, whose bytes the caller does not need); one
// that does not match gets strings that differ from in's (NUL never occurs
// in a stored payload, see storable).
func (r *Redecider) load(in *Claim) {
	clear(r.st.Requests)
	clear(r.st.Holders)
	clear(r.st.Holds)
	clear(r.st.Reserved)
	clear(r.st.Locks)
	clear(r.st.Members)
	r.st.Version, r.st.Upgraded, r.st.FrozenTo = r.upgrade.Version, r.upgrade.Upgraded, r.upgrade.FrozenTo
	r.st.Staged, r.st.StagedEntries = r.upgrade.Staged, r.upgrade.StagedEntries
	if e := r.renames[in.RequestID]; e != nil {
		r.st.Requests[in.RequestID] = e
	} else if id, err := uuid.Parse(in.RequestID); err == nil {
		if h, ok := r.requests[id]; ok {
			r.entry = Entry{RequestID: in.RequestID, UserID: in.UserID, Username: in.Username,
				Decision: &events.Decision{Command: in.command(), ToUsername: in.toUsername()}}
			if h != r.payloadHash(in.UserID, in.Username, in.command(), in.toUsername()) {
				r.entry.UserID += "\x00"
			}
			r.st.Requests[in.RequestID] = &r.entry
		}
	}
	if in.Invalid != "" {
		return
	}
	if in.Rename != nil && r.renames[in.Rename.RequestID] != nil {
		r.st.Requests[in.Rename.RequestID] = r.renames[in.Rename.RequestID]
	}
	k := in.Name.Key
	if v := r.holds[k]; v != nil {
		r.st.Holds[k] = v
	}
	if v := r.reserved[k]; v != nil {
		r.st.Reserved[k] = v
	}
	if v := r.locks[k]; v != nil {
		r.st.Locks[k] = v
	}
	if ms := r.members[k]; len(ms) > 0 {
		r.st.Members[k] = slices.Clone(ms)
	}
	if c, ok := r.holders[in.Name.Key]; ok {
		r.holder = Holder{Canonical: c.canonical, Key: in.Name.Key, UserID: c.userID.String(), Username: c.refused, Invalid: c.refused != "",
			RequestID: c.requestID.String(), RegisteredAt: time.Unix(0, c.registeredAt).UTC()}
		r.st.Holders[in.Name.Key] = &r.holder
	}
}

func (r *Redecider) payloadHash(userID, username, command, to string) uint64 {
	var h maphash.Hash
	h.SetSeed(r.seed)
	for _, s := range []string{userID, username, command, to} {
		h.WriteString(s)
		h.WriteByte(0)
	}
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
	in := Parse(rec, Rules{Partitions: partitions, Policy: latestPolicy, Translate: true})
	return in.RequestID, in.UserID, in.Username
}

func firstKeys(keys []*events.AdminKeys) *events.AdminKeys {
	if len(keys) == 0 {
		return nil
	}
	return keys[0]
}
