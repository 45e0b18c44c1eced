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
//
// It knows the username policy versions (docs/design.md, "Upgrading the
// username policy"): each partition decides under its starting version
// until its PolicyActivating record is decided activated, and under the
// new version after. A PolicyFreezing decided frozen makes the partition
// answer every new claim policy_upgrading (published, not stored) until
// then; HolderCarried records decided carried are staged, and the
// activation replaces the partition's holders with them: several staged
// under one key become a grandfathered group, whose members keep their
// names and whose key nobody else gets.
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
	// Carried is, per HolderCarried record decided carried, the request
	// that won the name (the usernames row of a carried holder names the
	// carried record's position and that request).
	Carried map[Position]string
	// Activated is, per partition that activated a new version, the
	// offset of its activation and the version.
	Activated map[int32]Activation
	// Groups is, per key under the new version, the grandfathered group
	// an activation made: canonical form -> user.
	Groups map[string]map[string]string
	// Shadows are the live shadow rows of activated partitions, by the
	// position of their HolderCarried record: a name the new version
	// refuses, carried a second time under the key it is displayed as,
	// as a member of that key's group (Holders keeps its holder row).
	Shadows map[Position]Holding
	// Start is the version every partition starts under.
	Start int
}

// Activation is where a partition started deciding under Version.
type Activation struct {
	Offset  int64
	Version int
}

// VersionAt is the policy version in force for the record at: the
// starting one up to the partition's activation (included), the new one
// after.
func (m *Model) VersionAt(at Position) int {
	if a, ok := m.Activated[at.Partition]; ok && at.Offset > a.Offset {
		return a.Version
	}
	return m.Start
}

// claimRecord is a claims record as the model reads it.
type claimRecord struct {
	at        Position
	typ       string
	requestID string
	userID    string
	username  string
	name      username.Username
	invalid   bool
	version   int // the policy version the record says it was made under
	upgrade   *events.PolicyChange
	carry     *events.Carry
	shadow    *events.ShadowFollow // a ShadowFollowing's, ids in canonical form
	key       string
}

// partState is what the model keeps per partition.
type partState struct {
	version  int
	frozenTo int
	upgraded bool
	byKey    map[string]Holding
	members  map[string][]Holding // grandfathered groups, by canonical form
	staged   []Holding
	shadows  map[Position]bool // staged entries that are shadows
}

// Replay runs the model over claims records (in any order; each partition
// is replayed in offset order), every partition starting under the latest
// policy version.
func Replay(recs []*kgo.Record, partitions int) *Model {
	return ReplayFrom(recs, partitions, username.Latest)
}

// ReplayFrom is Replay with every partition starting under policy version
// start (0 means username.Latest).
func ReplayFrom(recs []*kgo.Record, partitions, start int) *Model {
	if start == 0 {
		start = username.Latest
	}
	sorted := slices.Clone(recs)
	slices.SortFunc(sorted, func(a, b *kgo.Record) int {
		if a.Partition != b.Partition {
			return int(a.Partition - b.Partition)
		}
		return int(a.Offset - b.Offset)
	})
	m := &Model{Emitted: map[Position]Verdict{}, Ledger: map[LedgerKey]Verdict{}, Holders: map[string]Holding{}, RequestIDs: map[Position]string{},
		Carried: map[Position]string{}, Activated: map[int32]Activation{}, Groups: map[string]map[string]string{}, Shadows: map[Position]Holding{}, Start: start}
	parts := map[int32]*partState{}
	for _, r := range sorted {
		st := parts[r.Partition]
		if st == nil {
			st = &partState{version: start, byKey: map[string]Holding{}, members: map[string][]Holding{}, shadows: map[Position]bool{}}
			parts[r.Partition] = st
		}
		c := readClaim(r, partitions, policyOf(st.version))
		m.RequestIDs[c.at] = c.requestID
		m.decide(c, st)
	}
	// The holders are each partition's last ones: the partitions are
	// replayed one after another, and an activation replaces only its
	// own partition's.
	for _, st := range parts {
		for _, h := range st.byKey {
			m.Holders[h.Canonical] = h
		}
		for _, hs := range st.members {
			for _, h := range hs {
				if _, shadow := m.Shadows[h.At]; !shadow {
					m.Holders[h.Canonical] = h
				}
			}
		}
	}
	return m
}

// policyOf returns policy version v (one this build has).
func policyOf(v int) *username.Policy {
	p, err := username.ForVersion(v)
	if err != nil {
		panic(err)
	}
	return p
}

func isUpgradeType(typ string) bool {
	return typ == events.TypePolicyFreezing || typ == events.TypeHolderCarried || typ == events.TypePolicyActivating
}

func (m *Model) decide(c claimRecord, st *partState) {
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
	if !isUpgradeType(c.typ) && c.typ != events.TypeShadowFollowing && (st.frozenTo != 0 || st.upgraded && c.version > 0 && c.version < st.version) {
		// Answered policy_upgrading: published, not stored, so a retry
		// is decided afresh.
		v.Reason = events.ReasonPolicyUpgrading
		m.Emitted[c.at] = v
		return
	}
	if c.invalid {
		v.Reason = events.ReasonInvalid
		m.Ledger[lk], m.Emitted[c.at] = v, v
		return
	}
	if isUpgradeType(c.typ) {
		m.decideUpgrade(c, st, &v)
		m.Ledger[lk], m.Emitted[c.at] = v, v
		return
	}
	if c.typ == events.TypeShadowFollowing {
		m.followShadow(c, st, &v)
		m.Ledger[lk], m.Emitted[c.at] = v, v
		return
	}
	h, held := st.byKey[c.name.Key]
	group := st.members[c.name.Key]
	switch {
	case policyOf(st.version).Reserved(c.name):
		v.Reason = events.ReasonReserved
	case len(group) > 0:
		i := slices.IndexFunc(group, func(g Holding) bool { return g.Canonical == c.name.Canonical })
		switch {
		case i >= 0 && group[i].UserID == c.userID:
			v.Outcome, v.Holder = events.OutcomeRegistered, group[i].RequestID
		case i >= 0:
			v.Reason, v.Conflicts = events.ReasonTaken, group[i].Canonical
		default:
			v.Reason, v.Conflicts = events.ReasonConfusable, group[0].Canonical
		}
	case !held:
		h = Holding{Canonical: c.name.Canonical, Key: c.name.Key, UserID: c.userID, RequestID: c.requestID, At: c.at}
		st.byKey[h.Key] = h
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

// decideUpgrade decides a valid upgrade record into v.
func (m *Model) decideUpgrade(c claimRecord, st *partState, v *Verdict) {
	switch c.typ {
	case events.TypePolicyFreezing:
		if c.upgrade.To <= st.version || st.frozenTo != 0 && st.frozenTo != c.upgrade.To {
			v.Reason = events.ReasonInvalid
			return
		}
		st.frozenTo, v.Outcome = c.upgrade.To, events.OutcomeFrozen
	case events.TypeHolderCarried:
		if st.frozenTo != c.carry.To {
			v.Reason = events.ReasonInvalid
			return
		}
		v.Outcome = events.OutcomeCarried
		if c.carry.Kind == events.CarryHolder || c.carry.Kind == events.CarryShadow {
			st.staged = append(st.staged, Holding{Canonical: c.name.Canonical, Key: c.key, UserID: c.userID, RequestID: c.carry.RequestID, At: c.at})
			m.Carried[c.at] = c.carry.RequestID
			st.shadows[c.at] = c.carry.Kind == events.CarryShadow
		}
	case events.TypePolicyActivating:
		if st.frozenTo != c.upgrade.To {
			v.Reason = events.ReasonInvalid
			return
		}
		v.Outcome = events.OutcomeActivated
		clear(st.byKey)
		clear(st.members)
		byKey := map[string][]Holding{}
		for _, h := range st.staged {
			byKey[h.Key] = append(byKey[h.Key], h)
		}
		for _, h := range st.staged {
			if st.shadows[h.At] {
				m.Shadows[h.At] = h
			}
		}
		for k, hs := range byKey {
			if len(hs) == 1 && !st.shadows[hs[0].At] { // a shadow is always a group's member
				st.byKey[k] = hs[0]
				continue
			}
			slices.SortFunc(hs, func(a, b Holding) int { return strings.Compare(a.Canonical, b.Canonical) })
			st.members[k] = hs
			m.Groups[k] = map[string]string{}
			for _, h := range hs {
				m.Groups[k][h.Canonical] = h.UserID
			}
		}
		st.staged = nil
		st.version, st.frozenTo, st.upgraded = c.upgrade.To, 0, true
		m.Activated[c.at.Partition] = Activation{Offset: c.at.Offset, Version: c.upgrade.To}
	}
}

// followShadow decides a valid ShadowFollowing into v: the shadow under
// the record's key with its canonical form goes (drop) or names the new
// holder (transfer), while it is still the shadow of the holding the
// record names (its request and user); otherwise not_held, and nothing
// changes. A transferred shadow's row names the follow-up's position and
// the transfer's request (like a carried row, Carried).
func (m *Model) followShadow(c claimRecord, st *partState, v *Verdict) {
	f := c.shadow
	group := st.members[c.key]
	i := slices.IndexFunc(group, func(h Holding) bool { return h.Canonical == c.name.Canonical })
	if i < 0 || group[i].RequestID != f.HolderRequestID || group[i].UserID != f.HolderUserID {
		v.Reason = events.ReasonNotHeld
		return
	}
	delete(m.Shadows, group[i].At)
	if f.Action == events.ShadowDrop {
		v.Outcome = events.OutcomeShadowDropped
		st.members[c.key] = slices.Delete(group, i, i+1)
		delete(m.Groups[c.key], c.name.Canonical)
		if len(st.members[c.key]) == 0 {
			delete(st.members, c.key)
		}
		return
	}
	v.Outcome, v.Holder = events.OutcomeShadowTransferred, f.Cause
	h := Holding{Canonical: c.name.Canonical, Key: c.key, UserID: c.userID, RequestID: f.Cause, At: c.at}
	group[i] = h
	m.Shadows[c.at], m.Carried[c.at] = h, f.Cause
	if m.Groups[c.key] != nil {
		m.Groups[c.key][c.name.Canonical] = c.userID
	}
}

// positionNamespace and the "claims/<partition>/<offset>" name are the
// wire contract for claims without a usable request_id (docs/design.md,
// Poison records).
var positionNamespace = uuid.MustParse("5b1f4a36-2f0e-4c0a-9d55-8a2b2f6f7c11")

func positionID(at Position) string {
	return uuid.NewSHA1(positionNamespace, fmt.Appendf(nil, "claims/%d/%d", at.Partition, at.Offset)).String()
}

// readClaim applies the validity rules of docs/design.md to a record,
// under policy (the version its partition decides under).
func readClaim(r *kgo.Record, partitions int, policy *username.Policy) claimRecord {
	c := claimRecord{at: Position{r.Partition, r.Offset}, invalid: true}
	typ, sub, err := events.DecodeCommand(r)
	if err != nil {
		c.requestID = positionID(c.at)
		return c
	}
	c.typ, c.version = typ, sub.PolicyVersion
	c.userID, c.username = strings.ReplaceAll(sub.UserID, "\x00", "\uFFFD"), strings.ReplaceAll(sub.Username, "\x00", "\uFFFD")
	id, err := uuid.Parse(sub.RequestID)
	if err != nil {
		c.requestID = positionID(c.at)
		return c
	}
	c.requestID = id.String()
	if isUpgradeType(typ) {
		readUpgrade(&c, sub, r, partitions)
		return c
	}
	if typ == events.TypeShadowFollowing {
		readShadow(&c, sub, r, partitions)
		return c
	}
	uid, err := uuid.Parse(sub.UserID)
	if err != nil {
		return c
	}
	c.userID = uid.String()
	if c.name, err = policy.Normalize(sub.Username); err != nil {
		return c
	}
	c.invalid = sub.PolicyVersion != policy.Version() ||
		sub.Canonical != c.name.Canonical || sub.Key != c.name.Key || string(r.Key) != c.name.Key ||
		events.Partition(r.Key, partitions) != r.Partition
	return c
}

// readUpgrade checks an upgrade record (a marker or a carried entry): in
// its key's partition, a marker for its own partition, a carried entry
// named under its version as the username policy names it (the form
// Normalize gives, or Inspect's for a name the version refuses).
func readUpgrade(c *claimRecord, sub *events.ClaimSubmitted, r *kgo.Record, partitions int) {
	if events.Partition(r.Key, partitions) != r.Partition {
		return
	}
	if c.typ != events.TypeHolderCarried {
		if u := sub.Upgrade; u != nil && u.Partition == int(r.Partition) && u.Carried >= 0 {
			if _, err := username.ForVersion(u.To); err == nil {
				c.upgrade, c.invalid = u, false
			}
		}
		return
	}
	k := sub.Carry
	if k == nil {
		return
	}
	policy, err := username.ForVersion(k.To)
	if err != nil {
		return
	}
	if k.Kind != events.CarryReservation {
		uid, err := uuid.Parse(sub.UserID)
		if err != nil {
			return
		}
		c.userID = uid.String()
	}
	name, err := policy.Normalize(sub.Username)
	valid := err == nil
	if !valid {
		var ok bool
		if name, ok = policy.Inspect(sub.Username); !ok {
			name = username.Username{Typed: sub.Username, Canonical: sub.Canonical, Key: sub.Key}
		}
	}
	key := name.Key
	if k.Kind == events.CarryShadow {
		shown, ok := policy.ShownKey(sub.Username)
		if valid || !ok || shown == name.Key {
			return
		}
		key = shown
	}
	if sub.Canonical != name.Canonical || sub.Key != key || string(r.Key) != key || k.Valid != valid || key == "" {
		return
	}
	c.name, c.key, c.carry, c.invalid = name, key, k, false
}

// readShadow checks a ShadowFollowing: in its key's partition, its ids
// UUIDs, and named as the policy version it says names a shadow: the
// canonical form Normalize (or, for a refused name, Inspect) gives, under
// the key the name is displayed as, which differs from its canonical
// form's.
func readShadow(c *claimRecord, sub *events.ClaimSubmitted, r *kgo.Record, partitions int) {
	f := sub.Shadow
	uid, err := uuid.Parse(sub.UserID)
	if f == nil || err != nil || events.Partition(r.Key, partitions) != r.Partition {
		return
	}
	c.userID = uid.String()
	g := *f
	for _, id := range []*string{&g.HolderRequestID, &g.HolderUserID, &g.Cause} {
		u, err := uuid.Parse(*id)
		if err != nil {
			return
		}
		*id = u.String()
	}
	if g.Action != events.ShadowDrop && (g.Action != events.ShadowTransfer || g.RegisteredAt == nil) {
		return
	}
	policy, err := username.ForVersion(sub.PolicyVersion)
	if err != nil {
		return
	}
	if _, err := policy.Normalize(sub.Username); err == nil {
		return // an accepted name has no shadow
	}
	name, ok := policy.Inspect(sub.Username)
	shown, sok := policy.ShownKey(sub.Username)
	if !ok || !sok || shown == name.Key || sub.Canonical != name.Canonical || sub.Key != shown || string(r.Key) != shown {
		return
	}
	c.name, c.key, c.shadow, c.invalid = name, shown, &g, false
}
