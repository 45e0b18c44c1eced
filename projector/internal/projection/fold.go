package projection

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
)

// Entry is a request ledger row (table requests): the first decision for
// a request_id in its partition.
type Entry struct {
	RequestID string
	UserID    string // as in the claim
	Username  string // as typed in the claim
	Decision  *events.Decision
	Value     []byte // the decision's exact bytes, as published
}

// Holder is a usernames row: who holds a name since which claim.
type Holder struct {
	Canonical    string
	Key          string
	Username     string
	UserID       string
	RequestID    string
	Partition    int32
	Offset       int64
	RegisteredAt time.Time
	// GrantedUnder is the policy version the name was won under (the
	// deciding version; a carried holder keeps its own); 0 when unknown
	// (a row written before the policy upgrade existed: the registry's
	// first version).
	GrantedUnder int
	// Grandfathered marks a member of a grandfathered group: holders that
	// a policy upgrade found under one key (State.Members).
	Grandfathered bool
	// Invalid marks a carried name that the partition's policy refuses
	// as typed; its holder keeps it.
	Invalid bool
	// KeyVersion is the policy version that computed Canonical and Key
	// (the partition's when the row was written; 0: unknown).
	KeyVersion int
}

// Change is what one decision does to its partition's projection. The
// fields are the kinds of change there are; a decision that changes who
// holds a name in a new way (a release, a transfer) adds a field here and
// its case to Fold and State.Apply, and the projector's writes and
// rebuild's loader then carry it.
type Change struct {
	// Entry is the ledger row the decision adds: every first decision for
	// a request_id has one. Nil for request_conflict, which is published
	// but never stored (the request_id already has its decision).
	Entry *Entry
	// ReplaceEntry is set on a rename's final decision: its Entry replaces
	// the rename's first-step entry (same request_id and partition).
	ReplaceEntry bool
	// Holder is the holder the decision installs: the decision of the
	// claim (or rename step 2) that won its name, or a transfer.
	Holder *Holder
	// Key is the record key: the key every Drop below refers to.
	Key string
	// DropHolder: the key's holder leaves (release, rename's from, the
	// previous holder of a transfer).
	DropHolder bool
	// Hold is the hold the decision starts (release, rename's from);
	// DropHold: the key's hold ends (a win of the key).
	Hold     *Hold
	DropHold bool
	// Reservation is a runtime reservation the decision makes;
	// DropReservation removes the key's.
	Reservation     *Reservation
	DropReservation bool
	// Lock is the lock a rename's first step takes on from; DropLock
	// removes it (the rename's final decision).
	Lock     *Lock
	DropLock bool
	// DropCanonical is the canonical form of the holder DropHolder drops:
	// in a grandfathered group only that member leaves.
	DropCanonical string
	// The policy upgrade: Freeze is the version a PolicyFreezing freezes
	// the partition for; Stage the entry a HolderCarried stages; Activate
	// the version a PolicyActivating activates (State.Activate).
	Freeze   int
	Stage    *Staged
	Activate int
}

// Hold is a released name held for its former holder until HeldUntil.
type Hold struct {
	Key       string
	Canonical string
	UserID    string
	RequestID string // the release's (or rename's)
	HeldUntil time.Time
}

// Reservation is a name reserved at runtime by an administrator.
type Reservation struct {
	Key        string
	Canonical  string
	RequestID  string
	ReservedAt time.Time // the reserve record's timestamp
}

// Lock marks from of a rename under way; only the rename's step 3 lifts it.
type Lock struct {
	Key       string
	Canonical string
	UserID    string
	RequestID string // the rename's
	To        string // to's canonical form
}

// State is what the decisions of one partition have built and what the
// next decision depends on: the request ledger and the holders. The
// projector loads the rows a round's claims touch into one; the replay
// audit keeps a compact copy (Redecider).
type State struct {
	Requests map[string]*Entry       // by request_id
	Holders  map[string]*Holder      // by key
	Members  map[string][]*Holder    // by key: grandfathered groups, sorted by canonical form
	Holds    map[string]*Hold        // by key
	Reserved map[string]*Reservation // by key: runtime reservations
	Locks    map[string]*Lock        // by key: renames under way

	// The partition's username policy: Version is the version it decides
	// under (0 when the caller does not track it), Upgraded whether an
	// activation set it (commands made under an older version are then
	// answered policy_upgrading), FrozenTo the version it is frozen for
	// (0: not frozen), Staged how many carried entries wait for its
	// activation. StagedEntries holds them where the caller keeps them in
	// memory (the replay audit); the projector keeps them in PostgreSQL.
	Version       int
	Upgraded      bool
	FrozenTo      int
	Staged        int
	StagedEntries []*Staged
}

// NewState returns an empty State.
func NewState() *State {
	return &State{Requests: map[string]*Entry{}, Holders: map[string]*Holder{}, Members: map[string][]*Holder{},
		Holds: map[string]*Hold{}, Reserved: map[string]*Reservation{}, Locks: map[string]*Lock{}}
}

// Fold returns the change decision d makes to the projection, given its
// exact bytes (value) and its record key (the claim's key). It is the one
// definition of how the projection follows from the decisions: the
// projector applies it in its transaction to the decisions it makes, and
// rebuild to the decisions it reads from the registrations topic, so the
// state of a partition is a pure function of its decisions, whoever
// computes it.
//
// d must be the first decision at its position (a copy changes nothing and
// is not folded). A decision that cannot be a position's first (a win
// without its holder's data) is an error.
func Fold(d *events.Decision, value, key []byte) (Change, error) {
	if !events.Stored(d.Reason) {
		return Change{}, nil
	}
	c := Change{Key: string(key), Entry: &Entry{RequestID: d.RequestID, UserID: d.UserID, Username: d.Username, Decision: d, Value: value}}
	c.ReplaceEntry = d.Command == events.CommandRename && d.Step == 3
	switch {
	case Wins(d) || d.Outcome == events.OutcomeTransferred:
		if d.RegisteredAt == nil || d.Canonical == "" || len(key) == 0 || uuid.Validate(d.UserID) != nil {
			return Change{}, fmt.Errorf("registration of %q lacks registered_at, canonical, key or a UUID user_id", d.RequestID)
		}
		c.Holder = &Holder{Canonical: d.Canonical, Key: string(key), Username: d.Username, UserID: d.UserID,
			RequestID: d.RequestID, Partition: d.ClaimPartition, Offset: d.ClaimOffset, RegisteredAt: d.RegisteredAt.UTC(),
			GrantedUnder: d.PolicyVersion, KeyVersion: d.PolicyVersion}
		c.DropHold, c.DropHolder = true, d.Outcome == events.OutcomeTransferred
		c.DropCanonical = d.Canonical
		if d.Outcome == events.OutcomeTransferred { // a carried name the policy refuses stays marked so for its new holder
			c.Holder.Invalid = refused(d.PolicyVersion, d.Username)
		}
	case d.Outcome == events.OutcomeShadowDropped:
		c.DropHolder, c.DropCanonical = true, d.Canonical
	case d.Outcome == events.OutcomeShadowTransferred:
		if d.RegisteredAt == nil || d.Canonical == "" || len(key) == 0 || uuid.Validate(d.UserID) != nil || uuid.Validate(d.HolderRequestID) != nil {
			return Change{}, fmt.Errorf("shadow transfer %q lacks registered_at, canonical, key, a UUID user_id or holder_request_id", d.RequestID)
		}
		// The shadow keeps its place in its group, under the new holding
		// (the transfer's request_id), at the follow-up's position.
		c.Holder = &Holder{Canonical: d.Canonical, Key: string(key), Username: d.Username, UserID: d.UserID,
			RequestID: d.HolderRequestID, Partition: d.ClaimPartition, Offset: d.ClaimOffset, RegisteredAt: d.RegisteredAt.UTC(),
			GrantedUnder: d.PolicyVersion, KeyVersion: d.PolicyVersion, Grandfathered: true, Invalid: true}
		c.DropHolder, c.DropCanonical = true, d.Canonical
	case d.Outcome == events.OutcomeFrozen && d.Upgrade != nil:
		c.Freeze = d.Upgrade.To
	case d.Outcome == events.OutcomeCarried && d.Carry != nil:
		s, err := stage(d, string(key))
		if err != nil {
			return Change{}, err
		}
		c.Stage = s
	case d.Outcome == events.OutcomeActivated && d.Upgrade != nil:
		c.Activate = d.Upgrade.To
	case d.Outcome == events.OutcomeReleased || d.Outcome == events.OutcomeRenamed:
		c.DropHolder, c.DropLock = true, d.Outcome == events.OutcomeRenamed
		c.DropCanonical = d.Canonical
		if d.HeldUntil != nil {
			c.Hold = &Hold{Key: string(key), Canonical: d.Canonical, UserID: d.UserID, RequestID: d.RequestID, HeldUntil: d.HeldUntil.UTC()}
		}
	case d.Outcome == events.OutcomeRenaming:
		c.Lock = &Lock{Key: string(key), Canonical: d.Canonical, UserID: d.UserID, RequestID: d.RequestID, To: d.To}
	case d.Outcome == events.OutcomeRejected && c.ReplaceEntry:
		c.DropLock = true
	case d.Outcome == events.OutcomeReserved:
		c.Reservation = &Reservation{Key: string(key), Canonical: d.Canonical, RequestID: d.RequestID}
		if d.RegisteredAt != nil {
			c.Reservation.ReservedAt = d.RegisteredAt.UTC()
		}
	case d.Outcome == events.OutcomeUnreserved:
		c.DropReservation = true
	}
	return c, nil
}

// refused reports whether policy version v refuses typed (a name an
// upgrade carried to its holder although the version refuses it).
func refused(v int, typed string) bool {
	policy, err := username.ForVersion(v)
	if err != nil {
		return false
	}
	_, err = policy.Normalize(typed)
	return err != nil
}

// Wins reports whether d is the decision of the claim that won its name:
// a registration naming itself as the holder. A holder claiming its own
// name again under another request_id gets a registration naming the
// original holder, which changes no holder.
func Wins(d *events.Decision) bool {
	return d.Outcome == events.OutcomeRegistered && d.HolderRequestID == d.RequestID
}

// Apply puts c into st.
func (st *State) Apply(c Change) {
	if c.Entry != nil {
		st.Requests[c.Entry.RequestID] = c.Entry
	}
	if c.DropHolder && len(st.Members[c.Key]) > 0 {
		st.Members[c.Key] = slices.DeleteFunc(st.Members[c.Key], func(m *Holder) bool { return m.Canonical == c.DropCanonical })
		if h := c.Holder; h != nil { // a transfer keeps the member's place in its group
			h.Grandfathered = true
			st.Members[c.Key] = append(st.Members[c.Key], h)
			slices.SortFunc(st.Members[c.Key], func(a, b *Holder) int { return strings.Compare(a.Canonical, b.Canonical) })
		}
		if len(st.Members[c.Key]) == 0 {
			delete(st.Members, c.Key)
		}
	} else {
		if c.DropHolder {
			delete(st.Holders, c.Key)
		}
		if c.Holder != nil {
			st.Holders[c.Holder.Key] = c.Holder
		}
	}
	if c.DropHold {
		delete(st.Holds, c.Key)
	}
	if c.Hold != nil {
		st.Holds[c.Key] = c.Hold
	}
	if c.DropReservation {
		delete(st.Reserved, c.Key)
	}
	if c.Reservation != nil {
		st.Reserved[c.Key] = c.Reservation
	}
	if c.DropLock {
		delete(st.Locks, c.Key)
	}
	if c.Lock != nil {
		st.Locks[c.Key] = c.Lock
	}
	if c.Freeze != 0 {
		st.FrozenTo = c.Freeze
	}
	if c.Stage != nil {
		st.Staged++
		st.StagedEntries = append(st.StagedEntries, c.Stage)
	}
	if c.Activate != 0 {
		st.Activate(c.Activate)
	}
}

// The projection's columns, in the order Row and the column arrays give
// them. They are the migrations' columns (projector/migrations); a new
// column is added there, here and in the two Row methods and Columns
// functions below.
var (
	RequestColumns = []string{"request_id", "claim_partition", "claim_offset", "user_id", "username", "canonical", "outcome", "reason", "decision"}
	HolderColumns  = []string{"canonical", "key", "username", "user_id", "request_id", "claim_partition", "claim_offset", "registered_at", "granted_under", "grandfathered", "invalid", "policy_version"}
)

// Row is e as a requests row, in RequestColumns order, for COPY.
func (e *Entry) Row() ([]any, error) {
	id, err := uuid.Parse(e.RequestID)
	if err != nil {
		return nil, fmt.Errorf("request_id %q: %w", e.RequestID, err)
	}
	d := e.Decision
	return []any{[16]byte(id), d.ClaimPartition, d.ClaimOffset, e.UserID, e.Username, nullable(d.Canonical), d.Outcome, nullable(d.Reason), e.Value}, nil
}

// Row is h as a usernames row, in HolderColumns order, for COPY.
func (h *Holder) Row() ([]any, error) {
	id, err := uuid.Parse(h.RequestID)
	if err != nil {
		return nil, fmt.Errorf("request_id %q: %w", h.RequestID, err)
	}
	uid, err := uuid.Parse(h.UserID)
	if err != nil {
		return nil, fmt.Errorf("holder's user_id %q: %w", h.UserID, err)
	}
	return []any{h.Canonical, h.Key, h.Username, [16]byte(uid), [16]byte(id), h.Partition, h.Offset, h.RegisteredAt, grantedUnder(h.GrantedUnder), h.Grandfathered, h.Invalid, grantedUnder(h.KeyVersion)}, nil
}

// SQLInsertRequests and SQLInsertHolders insert a batch of rows, one array
// per column (RequestArrays, HolderArrays), in one statement.
const (
	SQLInsertRequests = `
INSERT INTO requests (request_id, claim_partition, claim_offset, user_id, username, canonical, outcome, reason, decision)
SELECT * FROM unnest($1::uuid[], $2::int[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bytea[])`

	// SQLReplaceRequests writes a rename's final decision over its first
	// step's ledger row.
	SQLReplaceRequests = `
INSERT INTO requests (request_id, claim_partition, claim_offset, user_id, username, canonical, outcome, reason, decision)
SELECT * FROM unnest($1::uuid[], $2::int[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bytea[])
ON CONFLICT (request_id, claim_partition) DO UPDATE SET claim_offset = excluded.claim_offset, outcome = excluded.outcome,
    reason = excluded.reason, decision = excluded.decision`
	SQLInsertHolders = `
INSERT INTO usernames (canonical, key, username, user_id, request_id, claim_partition, claim_offset, registered_at, granted_under, grandfathered, invalid, policy_version)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::uuid[], $6::int[], $7::bigint[], $8::timestamptz[], $9::int[], $10::bool[], $11::bool[], $12::int[])`
)

// RequestArrays are SQLInsertRequests' arguments: one array per column.
func RequestArrays(es []*Entry) []any {
	n := len(es)
	ids, users, names, outcomes := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	canon, reasons := make([]*string, n), make([]*string, n)
	parts, offsets, values := make([]int32, n), make([]int64, n), make([][]byte, n)
	for i, e := range es {
		d := e.Decision
		ids[i], users[i], names[i], outcomes[i] = e.RequestID, e.UserID, e.Username, d.Outcome
		canon[i], reasons[i] = nullable(d.Canonical), nullable(d.Reason)
		parts[i], offsets[i], values[i] = d.ClaimPartition, d.ClaimOffset, e.Value
	}
	return []any{ids, parts, offsets, users, names, canon, outcomes, reasons, values}
}

// HolderArrays are SQLInsertHolders' arguments: one array per column.
func HolderArrays(hs []*Holder) []any {
	n := len(hs)
	canon, keys, names, users, reqs := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	parts, offsets, ats := make([]int32, n), make([]int64, n), make([]time.Time, n)
	granted, grand, invalid, keyVersions := make([]*int32, n), make([]bool, n), make([]bool, n), make([]*int32, n)
	for i, h := range hs {
		canon[i], keys[i], names[i], users[i], reqs[i] = h.Canonical, h.Key, h.Username, h.UserID, h.RequestID
		parts[i], offsets[i], ats[i] = h.Partition, h.Offset, h.RegisteredAt
		granted[i], grand[i], invalid[i], keyVersions[i] = grantedUnder(h.GrantedUnder), h.Grandfathered, h.Invalid, grantedUnder(h.KeyVersion)
	}
	return []any{canon, keys, names, users, reqs, parts, offsets, ats, granted, grand, invalid, keyVersions}
}

// grantedUnder is a Holder's GrantedUnder as a column value: null for 0.
func grantedUnder(v int) *int32 {
	if v == 0 {
		return nil
	}
	g := int32(v)
	return &g
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
