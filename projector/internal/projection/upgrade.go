package projection

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
)

// The policy upgrade (registry policy upgrade; docs/design.md "Upgrading
// the username policy") as rules of the one decision rule. A partition
// moves from its version to version N through three kinds of records,
// each decided in log order like any command:
//
//   - PolicyFreezing: from here on the partition decides no new command
//     (they are answered policy_upgrading, published and not stored, so a
//     retry is decided afresh), except the steps 2 and 3 of renames
//     already under way, so that every rename ends.
//   - HolderCarried: one holder, hold or runtime reservation of the
//     frozen registry, written to the partition of its key under N. It is
//     staged, not live.
//   - PolicyActivating: the partition's entries of the old version are
//     replaced by the staged ones, and it decides under N from here on.
//     The marker says how many entries were carried to the partition; a
//     different number staged is an impossible state, and deciding it
//     fails (the partition stops) rather than lose a name.
//
// Several carried holders with one key under N become a grandfathered
// group (State.Members): each keeps its name, and a claim of the key is
// refused while any member remains.

// upgradeNamespace derives the request_ids of the upgrade's records, so a
// re-run writes the same records and they are ledger copies.
var upgradeNamespace = uuid.MustParse("3f8d2b6e-93a4-4b8e-a0f1-6c2d7e9b5a13")

// FreezeID, ActivateID and CarryID are the request_ids of the upgrade to
// version to's records: a partition's markers, and the carry of one entry
// (kind, its key under the version it was won under, its canonical form).
func FreezeID(to int, partition int32) string {
	return uuid.NewSHA1(upgradeNamespace, fmt.Appendf(nil, "policy/%d/freeze/%d", to, partition)).String()
}

// ActivateID is the request_id of partition's activation of version to.
func ActivateID(to int, partition int32) string {
	return uuid.NewSHA1(upgradeNamespace, fmt.Appendf(nil, "policy/%d/activate/%d", to, partition)).String()
}

// CarryID is the request_id of the carry of one entry into version to.
func CarryID(to int, kind, oldKey, canonical string) string {
	return uuid.NewSHA1(upgradeNamespace, fmt.Appendf(nil, "policy/%d/carry/%s/%s/%s", to, kind, oldKey, canonical)).String()
}

// MarkerKey returns the record key of partition's markers: the first of
// "policy-marker/0", "policy-marker/1", … that murmur2 puts in partition,
// so the markers pass the partition check like any record.
func MarkerKey(partition int32, partitions int) string {
	for i := 0; ; i++ {
		k := fmt.Sprintf("policy-marker/%d", i)
		if events.Partition([]byte(k), partitions) == partition {
			return k
		}
	}
}

// ShadowKey is the key of typed as displayed under policy, when policy
// refuses typed and that key differs from the key of its canonical form
// (CarryName): the upgrade carries such a name there too (CarryShadow).
func ShadowKey(policy *username.Policy, typed string) (string, bool) {
	_, key, valid, ok := CarryName(policy, typed)
	if valid || !ok {
		return "", false
	}
	shown, sok := policy.ShownKey(typed)
	if !sok || shown == key {
		return "", false
	}
	return shown, true
}

// CarryName is how the upgrade names a held name under policy: its
// canonical form and key under policy and whether policy accepts it as
// typed. A name the policy refuses keeps the canonical form and key that
// Policy.Inspect computes, so it still blocks its look-alikes; ok is false
// when not even Inspect can compute them (characters the policy does not
// allow at all), and such a name is carried under its old canonical form
// and key, which no claim under policy can produce.
func CarryName(policy *username.Policy, typed string) (canonical, key string, valid, ok bool) {
	if u, err := policy.Normalize(typed); err == nil {
		return u.Canonical, u.Key, true, true
	}
	if u, ok := policy.Inspect(typed); ok {
		return u.Canonical, u.Key, false, true
	}
	return "", "", false, false
}

// isUpgrade reports whether typ is one of the upgrade's command types.
func isUpgrade(typ string) bool {
	return typ == events.TypePolicyFreezing || typ == events.TypeHolderCarried || typ == events.TypePolicyActivating
}

// IsActivation reports whether rec is a PolicyActivating record: the
// projector ends a round's batch after one, since the records after it
// are parsed under the new version.
func IsActivation(rec *kgo.Record) bool { return events.TypeOf(rec) == events.TypePolicyActivating }

// checkUpgrade validates an upgrade record; it returns why it is invalid,
// or "".
func checkUpgrade(in *Claim, c *events.ClaimSubmitted, r *kgo.Record, ru Rules) string {
	in.Upgrade, in.Carry = c.Upgrade, c.Carry
	if events.Partition(r.Key, ru.Partitions) != r.Partition {
		return fmt.Sprintf("record is in partition %d but its key belongs in partition %d", r.Partition, events.Partition(r.Key, ru.Partitions))
	}
	if in.Type != events.TypeHolderCarried {
		u := c.Upgrade
		switch {
		case u == nil:
			return "a policy marker carries no upgrade"
		case u.Partition != int(r.Partition):
			return fmt.Sprintf("policy marker for partition %d is in partition %d", u.Partition, r.Partition)
		case u.Carried < 0:
			return "negative carried count"
		}
		if _, err := username.ForVersion(u.To); err != nil {
			return err.Error()
		}
		return ""
	}
	k := c.Carry
	if k == nil {
		return "a carried entry carries no carry"
	}
	policy, err := username.ForVersion(k.To)
	if err != nil {
		return err.Error()
	}
	switch k.Kind {
	case events.CarryHolder, events.CarryHold, events.CarryShadow:
		uid, err := uuid.Parse(c.UserID)
		if err != nil {
			return fmt.Sprintf("user_id %q is not a UUID", c.UserID)
		}
		in.UserID = uid.String()
	case events.CarryReservation:
	default:
		return fmt.Sprintf("unknown carry kind %q", k.Kind)
	}
	if _, err := uuid.Parse(k.RequestID); err != nil {
		return fmt.Sprintf("carried request_id %q is not a UUID", k.RequestID)
	}
	canon, key, valid, ok := CarryName(policy, c.Username)
	if !ok {
		canon, key = c.Canonical, c.Key // carried under its old names (see CarryName)
	}
	if k.Kind == events.CarryShadow {
		shown, sok := ShadowKey(policy, c.Username)
		if !sok {
			return "a shadow carry of a name without a displayed key of its own"
		}
		key = shown
	}
	if c.Canonical != canon || c.Key != key || string(r.Key) != key || k.Valid != valid || key == "" {
		return "carried entry's canonical form, key or validity does not match the username policy"
	}
	if k.Kind != events.CarryHold && k.At == nil || k.Kind == events.CarryHold && k.HeldUntil == nil {
		return "carried entry lacks its time"
	}
	in.Name = username.Username{Typed: c.Username, Canonical: canon, Key: key}
	return ""
}

// upgradeGate answers a command that the partition cannot decide now: a
// partition that is frozen decides nothing but the steps 2 and 3 of
// renames under way, shadow follow-ups (shadow.go) and the upgrade's own
// records; one that activated a new version answers a command made under
// an older one the same way (the API computes the name again under the new
// version when the caller retries). Nil when in is decided as usual.
func upgradeGate(st *State, in *Claim) *events.Decision {
	if isUpgrade(in.Type) || in.Type == events.TypeShadowFollowing {
		return nil // a follow-up is written once, by an outbox: answered unstored, it would be lost
	}
	saga := in.Type == events.TypeRenameTargetClaimed || in.Type == events.TypeRenameFinishing
	switch {
	case st.FrozenTo != 0 && !saga:
		return in.retry(fmt.Sprintf("this name's partition is moving to username policy version %d; retry shortly", st.FrozenTo))
	case st.Upgraded && in.Version > 0 && in.Version < st.Version:
		return in.retry(fmt.Sprintf("the command was made under username policy version %d; this name's partition now decides under version %d; retry", in.Version, st.Version))
	}
	return nil
}

func (in *Claim) retry(detail string) *events.Decision {
	d := in.rejection(events.ReasonPolicyUpgrading, detail, "")
	d.PolicyVersion = in.Policy.Version()
	return d
}

// decideUpgrade decides the upgrade's own records.
func decideUpgrade(st *State, in *Claim) (*events.Decision, error) {
	d := in.base("")
	switch in.Type {
	case events.TypePolicyFreezing:
		to := in.Upgrade.To
		d.Command, d.Upgrade = events.CommandFreeze, in.Upgrade
		switch {
		case to <= st.Version:
			return in.rejection(events.ReasonInvalid, fmt.Sprintf("partition already decides under username policy version %d", st.Version), ""), nil
		case st.FrozenTo != 0 && st.FrozenTo != to:
			return in.rejection(events.ReasonInvalid, fmt.Sprintf("partition is already moving to username policy version %d", st.FrozenTo), ""), nil
		}
		d.Outcome = events.OutcomeFrozen
	case events.TypeHolderCarried:
		d.Command, d.Carry = events.CommandCarry, in.Carry
		if st.FrozenTo != in.Carry.To {
			return in.rejection(events.ReasonInvalid, fmt.Sprintf("partition is not moving to username policy version %d", in.Carry.To), ""), nil
		}
		d.Outcome = events.OutcomeCarried
	case events.TypePolicyActivating:
		to := in.Upgrade.To
		d.Command, d.Upgrade = events.CommandActivate, in.Upgrade
		if st.FrozenTo != to {
			return in.rejection(events.ReasonInvalid, fmt.Sprintf("partition is not moving to username policy version %d", to), ""), nil
		}
		if st.Staged != in.Upgrade.Carried {
			return nil, fmt.Errorf("%w: partition %d: the activation of version %d expects %d carried entries, %d are staged; a carried record was lost",
				ErrCarryMismatch, in.Partition, to, in.Upgrade.Carried, st.Staged)
		}
		d.Outcome, d.PolicyVersion = events.OutcomeActivated, to
	}
	return d, nil
}

// ErrCarryMismatch is wrapped when an activation finds another number of
// carried entries staged than the upgrade wrote: deciding it would lose
// or invent a name, so the partition stops.
var ErrCarryMismatch = fmt.Errorf("carried entries do not match the activation")

// Staged is a carried entry waiting for its partition's activation; one
// of Holder, Hold and Reservation is set.
type Staged struct {
	RequestID   string // the HolderCarried record's
	Holder      *Holder
	Hold        *Hold
	Reservation *Reservation
}

// stage is the Staged entry of a carried decision d, whose record key is key.
func stage(d *events.Decision, key string) (*Staged, error) {
	k := d.Carry
	s := &Staged{RequestID: d.RequestID}
	switch k.Kind {
	case events.CarryHolder, events.CarryShadow:
		if k.At == nil || uuid.Validate(d.UserID) != nil {
			return nil, fmt.Errorf("carried holder %q lacks registered_at or a UUID user_id", d.RequestID)
		}
		s.Holder = &Holder{Canonical: d.Canonical, Key: key, Username: d.Username, UserID: d.UserID, RequestID: k.RequestID,
			Partition: d.ClaimPartition, Offset: d.ClaimOffset, RegisteredAt: k.At.UTC(), GrantedUnder: k.GrantedUnder, Invalid: !k.Valid, KeyVersion: k.To,
			Grandfathered: k.Kind == events.CarryShadow}
	case events.CarryHold:
		if k.HeldUntil == nil {
			return nil, fmt.Errorf("carried hold %q lacks held_until", d.RequestID)
		}
		s.Hold = &Hold{Key: key, Canonical: d.Canonical, UserID: d.UserID, RequestID: k.RequestID, HeldUntil: k.HeldUntil.UTC()}
	case events.CarryReservation:
		s.Reservation = &Reservation{Key: key, Canonical: d.Canonical, RequestID: k.RequestID}
		if k.At != nil {
			s.Reservation.ReservedAt = k.At.UTC()
		}
	default:
		return nil, fmt.Errorf("carried entry %q of unknown kind %q", d.RequestID, k.Kind)
	}
	return s, nil
}

// Activate is what an activation does to its partition's projection in
// memory: every holder, hold, reservation and lock of the old version
// goes, and the staged entries become live. Several holders staged under
// one key become its grandfathered group; of several holds or
// reservations of one key, the hold that ends last and the first
// reservation (by canonical form) stay. The projector does the same in SQL
// (store.go, sqlActivate*); TestActivateMatchesSQL keeps them equal.
func (st *State) Activate(version int) {
	clear(st.Holders)
	clear(st.Members)
	clear(st.Holds)
	clear(st.Reserved)
	clear(st.Locks)
	byKey := map[string][]*Holder{}
	for _, s := range st.StagedEntries {
		switch {
		case s.Holder != nil:
			byKey[s.Holder.Key] = append(byKey[s.Holder.Key], s.Holder)
		case s.Hold != nil:
			if h := st.Holds[s.Hold.Key]; h == nil || s.Hold.HeldUntil.After(h.HeldUntil) || s.Hold.HeldUntil.Equal(h.HeldUntil) && s.Hold.Canonical < h.Canonical {
				st.Holds[s.Hold.Key] = s.Hold
			}
		case s.Reservation != nil:
			if r := st.Reserved[s.Reservation.Key]; r == nil || s.Reservation.Canonical < r.Canonical {
				st.Reserved[s.Reservation.Key] = s.Reservation
			}
		}
	}
	for key, hs := range byKey {
		if len(hs) == 1 && !hs[0].Grandfathered { // a shadow is always a member
			hs[0].Grandfathered = false
			st.Holders[key] = hs[0]
			continue
		}
		slices.SortFunc(hs, func(a, b *Holder) int { return strings.Compare(a.Canonical, b.Canonical) })
		for _, h := range hs {
			h.Grandfathered = true
		}
		st.Members[key] = hs
	}
	st.StagedEntries, st.Staged = nil, 0
	st.Version, st.FrozenTo, st.Upgraded = version, 0, true
}

// member returns the grandfathered member of key with canonical, if any.
func (st *State) member(key, canonical string) *Holder {
	for _, m := range st.Members[key] {
		if m.Canonical == canonical {
			return m
		}
	}
	return nil
}

// holderOf returns who holds canonical under key: the ordinary holder or
// a grandfathered member; nil when nobody holds that exact name.
func (st *State) holderOf(key, canonical string) *Holder {
	if h := st.Holders[key]; h != nil && h.Canonical == canonical {
		return h
	}
	return st.member(key, canonical)
}

// timeOrNil returns &t, or nil for the zero time.
func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// FreezeRecord is partition's PolicyFreezing record for the upgrade to
// version to, among partitions; sign it (events.AdminKeys.Sign) before
// producing it.
func FreezeRecord(to int, partition int32, partitions int, version int) (*kgo.Record, error) {
	return markerRecord(events.TypePolicyFreezing, FreezeID(to, partition), to, partition, partitions, 0, version)
}

// ActivateRecord is partition's PolicyActivating record: carried is how
// many HolderCarried records the upgrade wrote to the partition.
func ActivateRecord(to int, partition int32, partitions, carried, version int) (*kgo.Record, error) {
	return markerRecord(events.TypePolicyActivating, ActivateID(to, partition), to, partition, partitions, carried, version)
}

func markerRecord(typ, id string, to int, partition int32, partitions, carried, version int) (*kgo.Record, error) {
	key := MarkerKey(partition, partitions)
	c := &events.ClaimSubmitted{RequestID: id, Username: key, Key: key, PolicyVersion: version,
		Upgrade: &events.PolicyChange{To: to, Partition: int(partition), Carried: carried}}
	rec, err := events.CommandRecord(typ, c)
	if err != nil {
		return nil, err
	}
	rec.Partition = partition
	return rec, nil
}

// CarriedEntry is one entry of the frozen projection to carry: a holder,
// a hold or a runtime reservation, as the old version stored it.
type CarriedEntry struct {
	Kind         string // events.CarryHolder, CarryHold or CarryReservation
	Username     string // as typed (a hold's or reservation's canonical form, which is what they keep)
	OldCanonical string
	OldKey       string
	UserID       string // empty for a reservation
	RequestID    string // the request that won (released, reserved) the name
	Partition    int32  // where that request is in claims
	Offset       int64
	At           time.Time // holder: registered_at; reservation: reserved_at; hold: held_until
	GrantedUnder int
}

// Carried is e under policy (version to): its canonical form and key,
// whether the policy accepts it, and its HolderCarried record for a
// claims topic of partitions partitions (sign it before producing).
func (e *CarriedEntry) Record(policy *username.Policy, partitions int) (*kgo.Record, error) {
	canon, key, valid, ok := CarryName(policy, e.Username)
	if !ok {
		canon, key = e.OldCanonical, e.OldKey
	}
	if e.Kind == events.CarryShadow {
		if key, ok = ShadowKey(policy, e.Username); !ok {
			return nil, fmt.Errorf("%q has no displayed key of its own under version %d", e.Username, policy.Version())
		}
	}
	k := &events.Carry{Kind: e.Kind, To: policy.Version(), RequestID: e.RequestID, GrantedUnder: e.GrantedUnder, Valid: valid,
		Partition: e.Partition, Offset: e.Offset, OldKey: e.OldKey}
	at := e.At.UTC()
	if e.Kind == events.CarryHold {
		k.HeldUntil = &at
	} else {
		k.At = &at
	}
	c := &events.ClaimSubmitted{RequestID: CarryID(policy.Version(), e.Kind, e.OldKey, e.OldCanonical), UserID: e.UserID,
		Username: e.Username, Canonical: canon, Key: key, PolicyVersion: policy.Version(), Carry: k}
	rec, err := events.CommandRecord(events.TypeHolderCarried, c)
	if err != nil {
		return nil, err
	}
	rec.Partition = events.Partition(rec.Key, partitions)
	return rec, nil
}
