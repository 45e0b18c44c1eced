package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Topic names: the defaults of Topics. Both topics have the same
// partition count, keep data forever and are never compacted: they are the
// registry's record.
const (
	TopicClaims        = "claims"
	TopicRegistrations = "registrations"
)

// Topics names one registry's two topics. A broker can hold several
// registries, each with its own pair (and its own database). Nothing a
// replay must reproduce depends on the names: a decision's bytes, its
// derived request_id and its partition are the same under any names.
type Topics struct {
	Claims        string // defaults to TopicClaims
	Registrations string // defaults to TopicRegistrations
}

// WithDefaults returns t with the default name for each name left empty.
func (t Topics) WithDefaults() Topics {
	if t.Claims == "" {
		t.Claims = TopicClaims
	}
	if t.Registrations == "" {
		t.Registrations = TopicRegistrations
	}
	return t
}

// Header keys set on every record. The value of HeaderType is one of the
// Type constants; HeaderSchema is the decimal schema version of the body.
const (
	HeaderType   = "event-type"
	HeaderSchema = "schema-version"
)

// Event types, the values of the HeaderType header.
//
// On TopicClaims, the commands. Each is keyed by the key of the name it
// acts on and decided in that key's partition. The rename steps after the
// first are written by the projector's outbox, never by the API.
//
// On TopicRegistrations, the decisions: one per claims record. A refused
// command of any type is a ClaimRejected.
const (
	TypeClaimSubmitted       = "ClaimSubmitted"
	TypeReleaseSubmitted     = "ReleaseSubmitted"     // the holder gives the name up
	TypeRenameSubmitted      = "RenameSubmitted"      // rename step 1, in from's partition: check and lock from
	TypeRenameTargetClaimed  = "RenameTargetClaimed"  // rename step 2, in to's partition: claim to (written by step 1's outbox)
	TypeRenameFinishing      = "RenameFinishing"      // rename step 3, in from's partition: release or unlock from (written by step 2's outbox)
	TypeReservationSubmitted = "ReservationSubmitted" // admin: reserve a name at runtime
	TypeUnreservation        = "UnreservationSubmitted"
	TypeTransferSubmitted    = "TransferSubmitted" // admin: give a held name to another user
	// The policy upgrade (registry policy upgrade; docs/design.md "Upgrading
	// the username policy"), written by the upgrade tool and signed like the
	// administrative commands.
	TypePolicyFreezing   = "PolicyFreezing"   // one per partition: stop deciding commands until the partition activates the new version
	TypeHolderCarried    = "HolderCarried"    // one per holder, hold or runtime reservation, in the partition of its key under the new version
	TypePolicyActivating = "PolicyActivating" // one per partition: the carried entries replace the old version's
	// TypeShadowFollowing is written by the projector's outbox, never by
	// the API: after a release, a rename's final renamed or a transfer of
	// a name that an upgrade also carried as a shadow (CarryShadow), it
	// tells the shadow's partition to drop the shadow or move it to the
	// new holder (ShadowFollow).
	TypeShadowFollowing = "ShadowFollowing"

	TypeUsernameRegistered  = "UsernameRegistered"
	TypeClaimRejected       = "ClaimRejected"
	TypeUsernameReleased    = "UsernameReleased"
	TypeRenameLocked        = "RenameLocked" // step 1 accepted: from is locked; not final
	TypeUsernameRenamed     = "UsernameRenamed"
	TypeUsernameReserved    = "UsernameReserved"
	TypeUsernameUnreserved  = "UsernameUnreserved"
	TypeUsernameTransferred = "UsernameTransferred"
	TypePolicyFrozen        = "PolicyFrozen"
	TypeNameCarried         = "NameCarried"
	TypePolicyActivated     = "PolicyActivated"
	TypeShadowDropped       = "ShadowDropped"
	TypeShadowTransferred   = "ShadowTransferred"
)

// CommandTypes are the event types on TopicClaims, and DecisionTypes those
// on TopicRegistrations.
var (
	CommandTypes = []string{TypeClaimSubmitted, TypeReleaseSubmitted, TypeRenameSubmitted, TypeRenameTargetClaimed,
		TypeRenameFinishing, TypeReservationSubmitted, TypeUnreservation, TypeTransferSubmitted,
		TypePolicyFreezing, TypeHolderCarried, TypePolicyActivating, TypeShadowFollowing}
	DecisionTypes = []string{TypeUsernameRegistered, TypeClaimRejected, TypeUsernameReleased, TypeRenameLocked,
		TypeUsernameRenamed, TypeUsernameReserved, TypeUsernameUnreserved, TypeUsernameTransferred,
		TypePolicyFrozen, TypeNameCarried, TypePolicyActivated, TypeShadowDropped, TypeShadowTransferred}
)

// Commands, the values of Decision.Command: which command a decision
// decides. Empty for a claim (schema 1 decisions carry none).
const (
	CommandClaim     = ""
	CommandRelease   = "release"
	CommandRename    = "rename"    // steps 1 and 3 (the rename's own request_id)
	CommandRenameTo  = "rename_to" // step 2 (a request_id derived from the rename's)
	CommandReserve   = "reserve"
	CommandUnreserve = "unreserve"
	CommandTransfer  = "transfer"
	CommandFreeze    = "policy_freeze"
	CommandCarry     = "carry"
	CommandActivate  = "policy_activate"
	CommandShadow    = "shadow" // a ShadowFollowing
)

// SchemaVersion is the version of the JSON bodies this package writes. A
// reader accepts records without the header as version 1.
const SchemaVersion = 1

// Outcomes, the values of Decision.Outcome.
const (
	OutcomeRegistered  = "registered"
	OutcomeRejected    = "rejected"
	OutcomeReleased    = "released"
	OutcomeRenaming    = "renaming" // a rename's first step: from is locked; never a rename's final outcome
	OutcomeRenamed     = "renamed"
	OutcomeReserved    = "reserved"
	OutcomeUnreserved  = "unreserved"
	OutcomeTransferred = "transferred"
	OutcomeFrozen      = "frozen"    // a PolicyFreezing decided: the partition waits for the new version
	OutcomeCarried     = "carried"   // a HolderCarried decided: staged until the partition activates
	OutcomeActivated   = "activated" // a PolicyActivating decided: the partition decides under the new version
	// A ShadowFollowing decided: the shadow of the holding it names is
	// gone (its holder released or renamed the name), or names the
	// name's new holder (a transfer). One that finds no such shadow is
	// rejected not_held and changes nothing.
	OutcomeShadowDropped     = "shadow_dropped"
	OutcomeShadowTransferred = "shadow_transferred"
)

// Final reports whether outcome ends its request (every outcome but
// OutcomeRenaming).
func Final(outcome string) bool { return outcome != OutcomeRenaming }

// ClaimSubmitted is the body of every command on TopicClaims (the record's
// HeaderType says which command). For a claim it asks for a username; for
// the other commands Username, Canonical and Key name the name acted on
// (for a rename step, the name of the step's partition), and the optional
// fields below carry the rest.
type ClaimSubmitted struct {
	RequestID     string    `json:"request_id"`     // UUID chosen by the client or the API; identifies the request across retries
	UserID        string    `json:"user_id"`        // UUID of the user claiming the name
	Username      string    `json:"username"`       // as typed
	Canonical     string    `json:"canonical"`      // the policy's canonical form
	Key           string    `json:"key"`            // the policy's partition key, equal to the record key
	PolicyVersion int       `json:"policy_version"` // the username policy version that computed Canonical and Key
	SubmittedAt   time.Time `json:"submitted_at"`   // when the API accepted the request; informational only
	// Caller names the service that wrote the claim: the API's
	// authenticated caller (never its token), or the embedded client's
	// ClientConfig.Caller. Empty in records written before it existed.
	Caller string `json:"caller,omitempty"`

	// HoldSeconds is, for a release and a rename, the hold period in
	// force when the API accepted it (its --hold); 0 means none. The
	// decider adds it to the deciding record's timestamp, so the log
	// alone fixes held_until and a replay decides alike.
	HoldSeconds int64 `json:"hold_seconds,omitempty"`
	// Rename carries a rename through its three steps.
	Rename *RenameStep `json:"rename,omitempty"`
	// Upgrade is, for PolicyFreezing and PolicyActivating, the policy
	// change; Carry is, for HolderCarried, the entry carried.
	Upgrade *PolicyChange `json:"upgrade,omitempty"`
	Carry   *Carry        `json:"carry,omitempty"`
	// Shadow is, for ShadowFollowing, what happened to the name the
	// shadow follows.
	Shadow *ShadowFollow `json:"shadow,omitempty"`
}

// Shadow actions: what a ShadowFollowing does to the shadow it names.
const (
	ShadowDrop     = "drop"     // the holder released the name, or renamed away from it
	ShadowTransfer = "transfer" // the name was transferred: the shadow names the new holder
)

// ShadowFollow is the body of a ShadowFollowing beyond the command's
// fields: Username, Canonical and Key of the record name the shadow (the
// name as typed, its canonical form, and the key it is displayed as),
// UserID the holder after the change (the old holder for a drop, the new
// one for a transfer). The shadow is acted on only while it is still the
// shadow of the holding named here (HolderRequestID and HolderUserID), so
// a stale or repeated follow-up changes nothing else.
type ShadowFollow struct {
	Action          string `json:"action"`            // ShadowDrop or ShadowTransfer
	HolderRequestID string `json:"holder_request_id"` // the request that won the holding the shadow belongs to (its usernames row's request_id)
	HolderUserID    string `json:"holder_user_id"`    // that holding's user
	// Cause is the decision that ended or moved the holding: its
	// request_id (for a transfer, the new holding's request_id), and the
	// position of the record it decided.
	Cause          string `json:"cause_request_id"`
	CausePartition int32  `json:"cause_partition"`
	CauseOffset    int64  `json:"cause_offset"`
	// RegisteredAt is, for a transfer, the new holding's registered_at
	// (the transfer record's timestamp).
	RegisteredAt *time.Time `json:"registered_at,omitempty"`
}

// PolicyChange is what the markers of a policy upgrade carry.
type PolicyChange struct {
	To        int `json:"to"`        // the policy version the partition moves to
	Partition int `json:"partition"` // the partition the marker is meant for (its key was chosen to land there)
	// Carried is, for PolicyActivating, how many HolderCarried records the
	// upgrade wrote to this partition; the activation refuses to happen
	// with any other number staged (a lost carry would lose a name).
	Carried int `json:"carried,omitempty"`
}

// Carry kinds: what a HolderCarried carries.
const (
	CarryHolder      = "holder"
	CarryHold        = "hold"
	CarryReservation = "reservation"
	// CarryShadow carries a holder's name that the new version refuses a
	// second time, under the key of its displayed form (Policy.ShownKey)
	// when that differs from the key of its canonical form: "Iumen11"
	// displays like "lumen11", so it is also a member of lumen11's key.
	CarryShadow = "shadow"
)

// Carry is one holder, hold or runtime reservation carried by a policy
// upgrade into the partition of its key under the new version. The
// record's Username is the name as typed when it was won (or reserved),
// Canonical and Key are under the new version (for a name the new
// version refuses, what Policy.Inspect computes, see docs/usernames.md),
// UserID is the holder (or the hold's former holder).
type Carry struct {
	Kind         string     `json:"kind"`                    // CarryHolder, CarryHold or CarryReservation
	To           int        `json:"to"`                      // the version it is carried into
	RequestID    string     `json:"carried_request_id"`      // the request that won the name (the release, the reservation)
	GrantedUnder int        `json:"granted_under"`           // the policy version the name was won under
	Valid        bool       `json:"valid"`                   // the new version accepts the name as typed
	Partition    int32      `json:"original_partition"`      // where the winning command is in claims
	Offset       int64      `json:"original_offset"`         //
	At           *time.Time `json:"registered_at,omitempty"` // holder: registered_at; reservation: reserved_at
	HeldUntil    *time.Time `json:"held_until,omitempty"`    // hold: when it ends
	OldKey       string     `json:"old_key"`                 // the key under the version it was won under
}

// RenameStep is a rename as its steps carry it. The API fills the From and
// To fields in step 1; the projector copies them into the next steps, and
// fills the step-2 verdict into step 3.
type RenameStep struct {
	RequestID     string `json:"request_id"` // the rename's own request_id (step 1's)
	From          string `json:"from"`       // as typed
	FromCanonical string `json:"from_canonical"`
	FromKey       string `json:"from_key"`
	To            string `json:"to"` // as typed
	ToCanonical   string `json:"to_canonical"`
	ToKey         string `json:"to_key"`
	// Step 2's verdict, set in step 3: Outcome "registered" or "rejected",
	// and for a rejection its Reason, Conflicts and HeldUntil.
	Outcome   string     `json:"outcome,omitempty"`
	Reason    string     `json:"reason,omitempty"`
	Conflicts string     `json:"conflicts_with,omitempty"`
	HeldUntil *time.Time `json:"held_until,omitempty"`
}

// Decision is the body of both decision events. Outcome says which one:
// "registered" is a UsernameRegistered, "rejected" a ClaimRejected.
//
// A decision is a pure function of the claims before it in its partition,
// so a replay of the claims topic yields the same bytes.
type Decision struct {
	RequestID string `json:"request_id"`
	UserID    string `json:"user_id,omitempty"`   // empty when the claim could not be parsed
	Username  string `json:"username,omitempty"`  // as typed in the claim
	Canonical string `json:"canonical,omitempty"` // empty when the username broke the policy (an invalid claim can still carry it when something else was wrong)
	Outcome   string `json:"outcome"`
	Reason    string `json:"reason,omitempty"`         // set when Outcome is "rejected"
	Detail    string `json:"detail,omitempty"`         // for "invalid" and "request_conflict": why, for a person
	Conflicts string `json:"conflicts_with,omitempty"` // for "taken" and "confusable": the holder's canonical name
	Caller    string `json:"caller,omitempty"`         // the decided claim's Caller, copied from its record; empty when it had none

	// HolderRequestID is, for "registered", the request that first won the
	// name. It differs from RequestID when a user claims a name it already
	// holds under a new request_id.
	HolderRequestID string `json:"holder_request_id,omitempty"`
	// RegisteredAt is, for "registered", the timestamp of the winning claim's
	// record: taken from the log, so replay reproduces it.
	RegisteredAt *time.Time `json:"registered_at,omitempty"`

	ClaimPartition int32 `json:"claim_partition"` // partition of the claim record that was decided
	ClaimOffset    int64 `json:"claim_offset"`    // offset of the claim record that was decided
	PolicyVersion  int   `json:"policy_version"`  // the policy version the projector decided with

	// Command is which command this decides; empty for a claim.
	Command string `json:"command,omitempty"`
	// HeldUntil is, for a release and a rename, when the hold on the
	// released name ends (record timestamp plus the hold period; absent
	// when the hold is 0); for a "held" rejection, when the hold that
	// refused it ends.
	HeldUntil *time.Time `json:"held_until,omitempty"`
	// From and To are a rename's canonical names (steps 1 and 3).
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
	// PreviousUserID is, for a transfer, who held the name before.
	PreviousUserID string `json:"previous_user_id,omitempty"`
	// ToUsername is, for a rename, the to name as typed: with Username
	// (from as typed) and UserID it is the payload a retry must repeat.
	ToUsername string `json:"to_username,omitempty"`
	// Step is 3 on a rename's final decision made by its third step (it
	// replaces the first step's ledger entry and unlocks from); absent
	// otherwise.
	Step int `json:"step,omitempty"`
	// Upgrade and Carry are the policy upgrade's markers' and carried
	// entries' data, copied from the command (see ClaimSubmitted).
	Upgrade *PolicyChange `json:"upgrade,omitempty"`
	Carry   *Carry        `json:"carry,omitempty"`
	// Shadow is a ShadowFollowing's data, copied from the command.
	Shadow *ShadowFollow `json:"shadow,omitempty"`
}

// typeOf maps an outcome to its decision event type.
var typeOf = map[string]string{
	OutcomeRegistered: TypeUsernameRegistered, OutcomeRejected: TypeClaimRejected,
	OutcomeReleased: TypeUsernameReleased, OutcomeRenaming: TypeRenameLocked, OutcomeRenamed: TypeUsernameRenamed,
	OutcomeReserved: TypeUsernameReserved, OutcomeUnreserved: TypeUsernameUnreserved, OutcomeTransferred: TypeUsernameTransferred,
	OutcomeFrozen: TypePolicyFrozen, OutcomeCarried: TypeNameCarried, OutcomeActivated: TypePolicyActivated,
	OutcomeShadowDropped: TypeShadowDropped, OutcomeShadowTransferred: TypeShadowTransferred,
}

// Type is the event type of d, for the HeaderType header.
func (d *Decision) Type() string {
	if t, ok := typeOf[d.Outcome]; ok {
		return t
	}
	return TypeClaimRejected
}

// ErrNotAnEvent is wrapped by the Decode functions when a record is not the
// event they were asked for, or its body does not parse.
var ErrNotAnEvent = errors.New("not a registry event")

// ClaimRecord builds the TopicClaims record for c, keyed by c.Key.
func ClaimRecord(c *ClaimSubmitted) (*kgo.Record, error) {
	return CommandRecord(TypeClaimSubmitted, c)
}

// CommandRecord builds the TopicClaims record of command type typ (one of
// CommandTypes) with body c, keyed by c.Key.
func CommandRecord(typ string, c *ClaimSubmitted) (*kgo.Record, error) {
	body, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encoding %s %s: %w", typ, c.RequestID, err)
	}
	return newRecord(TopicClaims, []byte(c.Key), typ, body), nil
}

// DecisionValue encodes d as the body of its registrations record. The
// projector stores these exact bytes, so every copy it publishes is
// identical.
func DecisionValue(d *Decision) ([]byte, error) {
	body, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("encoding decision for %s: %w", d.RequestID, err)
	}
	return body, nil
}

// DecisionRecord builds the TopicRegistrations record for an encoded
// decision, on the same partition as the claim it decides.
func DecisionRecord(key []byte, partition int32, eventType string, body []byte) *kgo.Record {
	r := newRecord(TopicRegistrations, key, eventType, body)
	r.Partition = partition
	return r
}

func newRecord(topic string, key []byte, eventType string, body []byte) *kgo.Record {
	return &kgo.Record{
		Topic: topic,
		Key:   key,
		Value: body,
		Headers: []kgo.RecordHeader{
			{Key: HeaderType, Value: []byte(eventType)},
			{Key: HeaderSchema, Value: []byte(strconv.Itoa(SchemaVersion))},
		},
	}
}

// DecodeClaim parses a TopicClaims record. Unknown JSON fields are ignored
// (later schema versions may add some); a wrong event type, a newer schema
// version or a body that is not JSON wraps ErrNotAnEvent.
func DecodeClaim(r *kgo.Record) (*ClaimSubmitted, error) {
	_, c, err := DecodeCommand(r)
	return c, err
}

// DecodeCommand parses a TopicClaims record of any command type, returning
// its type (one of CommandTypes) and body.
func DecodeCommand(r *kgo.Record) (string, *ClaimSubmitted, error) {
	if err := checkHeaders(r, CommandTypes...); err != nil {
		return "", nil, err
	}
	var c ClaimSubmitted
	if err := json.Unmarshal(r.Value, &c); err != nil {
		return "", nil, fmt.Errorf("%w: claim body: %v", ErrNotAnEvent, err)
	}
	return header(r, HeaderType), &c, nil
}

// DecodeDecision parses a TopicRegistrations record.
func DecodeDecision(r *kgo.Record) (*Decision, error) {
	if err := checkHeaders(r, DecisionTypes...); err != nil {
		return nil, err
	}
	var d Decision
	if err := json.Unmarshal(r.Value, &d); err != nil {
		return nil, fmt.Errorf("%w: decision body: %v", ErrNotAnEvent, err)
	}
	if _, known := typeOf[d.Outcome]; d.RequestID == "" || !known {
		return nil, fmt.Errorf("%w: decision lacks request_id or outcome", ErrNotAnEvent)
	}
	return &d, nil
}

func checkHeaders(r *kgo.Record, types ...string) error {
	typ, schema := header(r, HeaderType), header(r, HeaderSchema)
	if !slices.Contains(types, typ) {
		return fmt.Errorf("%w: event type %q, want one of %q", ErrNotAnEvent, typ, types)
	}
	if schema == "" {
		return nil
	}
	v, err := strconv.Atoi(schema)
	if err != nil || v < 1 || v > SchemaVersion {
		return fmt.Errorf("%w: schema version %q, this build reads 1..%d", ErrNotAnEvent, schema, SchemaVersion)
	}
	return nil
}

// TypeOf is r's event type (its HeaderType header).
func TypeOf(r *kgo.Record) string { return header(r, HeaderType) }

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// Partition is the partition a key belongs to among n: murmur2 of the key
// bytes, the sign bit masked, modulo n. It is what Kafka's Java client and
// franz-go's default partitioner compute; librdkafka's default (CRC32)
// differs and must be configured to murmur2_random.
func Partition(key []byte, n int) int32 {
	return int32(partitioner.Partition(&kgo.Record{Key: key}, n))
}

var partitioner = kgo.StickyKeyPartitioner(nil).ForTopic(TopicClaims)
