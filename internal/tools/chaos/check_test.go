package chaos

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
)

const testPartitions = 4

// claimRec is the record the API would write for a claim, at offset of
// its key's partition (offsets are given by the caller, in log order).
func claimRec(t *testing.T, offset int64, requestID, userID, typed string) *kgo.Record {
	t.Helper()
	name, err := username.Normalize(typed)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := events.ClaimRecord(&events.ClaimSubmitted{RequestID: requestID, UserID: userID, Username: typed,
		Canonical: name.Canonical, Key: name.Key, PolicyVersion: username.Latest})
	if err != nil {
		t.Fatal(err)
	}
	rec.Partition, rec.Offset = events.Partition(rec.Key, testPartitions), offset
	return rec
}

// log lays claims out in their partitions, giving each the next offset
// there.
func logOf(t *testing.T, cs ...[3]string) []*kgo.Record {
	t.Helper()
	next := map[int32]int64{}
	var out []*kgo.Record
	for _, c := range cs {
		r := claimRec(t, 0, c[0], c[1], c[2])
		r.Offset = next[r.Partition]
		next[r.Partition]++
		out = append(out, r)
	}
	return out
}

// world is what a correct registry leaves behind for recs: decisions
// published once each, the ledger and projection the model predicts, and
// one answered operation per claim.
func world(t *testing.T, recs []*kgo.Record) *Input {
	t.Helper()
	return worldFrom(t, recs, 0)
}

// worldFrom is world for a registry whose partitions start under policy
// version start (0: the latest).
func worldFrom(t *testing.T, recs []*kgo.Record, start int) *Input {
	t.Helper()
	m := ReplayFrom(recs, testPartitions, start)
	in := &Input{Partitions: testPartitions, Claims: recs, Stored: map[int32]int64{}, Ends: map[int32]int64{}, PolicyVersion: start}
	bytesAt := map[Position][]byte{}
	for _, r := range recs {
		at := Position{r.Partition, r.Offset}
		in.Ends[r.Partition] = max(in.Ends[r.Partition], r.Offset+1)
		in.Stored[r.Partition] = in.Ends[r.Partition]
		v := m.Emitted[at]
		b, ok := bytesAt[v.At]
		if !ok || v.At != at && v.Reason == events.ReasonRequestConflict {
			d := &events.Decision{RequestID: v.RequestID, UserID: v.UserID, Username: v.Username, Canonical: v.Canonical,
				Outcome: v.Outcome, Reason: v.Reason, Conflicts: v.Conflicts, HolderRequestID: v.Holder,
				ClaimPartition: v.At.Partition, ClaimOffset: v.At.Offset, PolicyVersion: m.VersionAt(v.At)}
			if _, c, err := events.DecodeCommand(r); err == nil && v.At == at {
				d.Carry, d.Upgrade, d.Shadow = c.Carry, c.Upgrade, c.Shadow
			}
			var err error
			if b, err = events.DecisionValue(d); err != nil {
				t.Fatal(err)
			}
			bytesAt[v.At] = b
			in.Registrations = append(in.Registrations, events.DecisionRecord(r.Key, r.Partition, d.Type(), b))
			if stored, ok := m.Ledger[LedgerKey{v.RequestID, v.At.Partition}]; ok && stored.At == v.At {
				in.Ledger = append(in.Ledger, LedgerRow{RequestID: v.RequestID, Partition: v.At.Partition, Offset: v.At.Offset, UserID: v.UserID, Username: v.Username, Decision: b})
			}
		}
		if typ, c, err := events.DecodeCommand(r); err == nil && !isUpgradeType(typ) && typ != events.TypeShadowFollowing { // no API answers those
			op := Op{ID: len(in.Ops), Kind: KindNew, RequestID: c.RequestID, UserID: c.UserID, Username: c.Username,
				Result: resultOf(v), Canonical: v.Canonical, Invoke: time.Unix(0, 0)}
			if v.Reason == events.ReasonPolicyUpgrading {
				op.Result, op.Code, op.Error, op.Canonical = ResultUnknown, 503, upgradingAnswer, ""
			}
			in.Ops = append(in.Ops, op)
		}
	}
	for i, r := range in.Registrations {
		r.Offset = int64(i)
	}
	for _, h := range m.Holders {
		in.Usernames = append(in.Usernames, h)
	}
	for _, h := range m.Shadows {
		in.Usernames = append(in.Usernames, h)
	}
	return in
}

var (
	u1, u2, u3     = uuid.NewString(), uuid.NewString(), uuid.NewString()
	r1, r2, r3, r4 = uuid.NewString(), uuid.NewString(), uuid.NewString(), uuid.NewString()
)

// collisions: alice won by u1, taken for u2, a look-alike with a digit 1
// confusable for u3, a retry of u1's request, and a reuse of r2 with
// another name.
func collisions(t *testing.T) []*kgo.Record {
	return logOf(t,
		[3]string{r1, u1, "alice"},
		[3]string{r2, u2, "Alice"},
		[3]string{r3, u3, "a1ice"},
		[3]string{r1, u1, "alice"},
		[3]string{r2, u2, "alicE"},
		[3]string{r4, u2, "bob"},
	)
}

func expectOnly(t *testing.T, rep *Report, props ...string) {
	t.Helper()
	want := map[string]bool{}
	for _, p := range props {
		want[p] = true
		if rep.Counts[p] == 0 {
			t.Errorf("property (%s) %s did not fire", p, PropertyNames[p])
		}
	}
	if len(props) == 0 && rep.Anomalies() != 0 {
		t.Errorf("anomalies in a correct world: %v %v", rep.Counts, rep.Examples)
	}
	if t.Failed() {
		t.Logf("counts %v examples %v", rep.Counts, rep.Examples)
	}
}

func TestCheckCorrectWorld(t *testing.T) {
	rep := Check(world(t, collisions(t)))
	expectOnly(t, rep)
	if rep.Holders != 2 || rep.Claims != 6 {
		t.Errorf("holders %d claims %d, want 2 and 6", rep.Holders, rep.Claims)
	}
}

func TestCheckDoubleGrantInAnswers(t *testing.T) {
	in := world(t, collisions(t))
	in.Ops = append(in.Ops, Op{ID: 99, Kind: KindNew, RequestID: uuid.NewString(), UserID: u3, Username: "ALICE", Result: ResultRegistered, Canonical: "alice"})
	expectOnly(t, Check(in), PropSingleHolder, PropAnswersAgree, PropRegisteredHeld)
}

func TestCheckDoubleGrantOfSkeleton(t *testing.T) {
	in := world(t, collisions(t))
	in.Usernames = append(in.Usernames, Holding{Canonical: "a1ice", Key: "alice", UserID: u3, RequestID: r3, At: Position{events.Partition([]byte("alice"), testPartitions), 2}})
	rep := Check(in)
	expectOnly(t, rep, PropSingleHolder, PropReplayEqual)
}

func TestCheckAnswersDisagree(t *testing.T) {
	in := world(t, collisions(t))
	retry := in.Ops[1] // u2's "Alice", taken
	retry.ID, retry.Result, retry.Kind = 98, ResultRequestConflict, KindRetry
	in.Ops = append(in.Ops, retry)
	expectOnly(t, Check(in), PropAnswersAgree)
}

func TestCheckTimeoutTurnedIntoAnswer(t *testing.T) {
	// An answer for a claim that has no durable decision at all.
	in := world(t, collisions(t))
	in.Ops = append(in.Ops, Op{ID: 97, Kind: KindNew, RequestID: uuid.NewString(), UserID: u3, Username: "carol", Result: ResultRegistered, Canonical: "carol"})
	expectOnly(t, Check(in), PropAnswersAgree, PropRegisteredHeld)
}

func TestCheckUnknownAnswersAgreeWithAnything(t *testing.T) {
	in := world(t, collisions(t))
	for _, op := range in.Ops {
		op.Result, op.ID = ResultUnknown, op.ID+100
		in.Ops = append(in.Ops, op)
	}
	expectOnly(t, Check(in))
}

func TestCheckCopiesDiffer(t *testing.T) {
	in := world(t, collisions(t))
	dup := *in.Registrations[0]
	dup.Value = append([]byte(nil), dup.Value...)
	dup.Value[len(dup.Value)-2] = '3' // policy_version 2 → 3
	dup.Offset = 1000
	in.Registrations = append(in.Registrations, &dup)
	expectOnly(t, Check(in), PropOneDecision)
}

func TestCheckLedgerRowMissing(t *testing.T) {
	in := world(t, collisions(t))
	in.Ledger = in.Ledger[1:] // r1's win
	expectOnly(t, Check(in), PropOneDecision, PropReplayEqual)
}

func TestCheckDecisionNotPublished(t *testing.T) {
	in := world(t, collisions(t))
	in.Registrations = in.Registrations[1:]
	expectOnly(t, Check(in), PropOneDecision, PropAllDecided)
}

func TestCheckDecisionWithoutClaim(t *testing.T) {
	in := world(t, collisions(t))
	d := &events.Decision{RequestID: uuid.NewString(), UserID: u1, Username: "zed", Canonical: "zed", Outcome: events.OutcomeRejected,
		Reason: events.ReasonTaken, Conflicts: "zed", ClaimPartition: 1, ClaimOffset: 77, PolicyVersion: 1}
	b, _ := events.DecisionValue(d)
	in.Registrations = append(in.Registrations, events.DecisionRecord([]byte("zed"), 1, d.Type(), b))
	expectOnly(t, Check(in), PropNoOrphan)
}

func TestCheckLaterClaimWon(t *testing.T) {
	// The registry let the second claim win: it publishes, stores and
	// answers that consistently, yet the log says the first claim wins.
	recs := logOf(t, [3]string{r1, u1, "dave"}, [3]string{r2, u2, "dave"})
	in := world(t, recs[1:]) // decided as if the first claim were not there
	in.Claims = recs
	for _, r := range in.Registrations {
		d, _ := events.DecodeDecision(r)
		d.ClaimOffset = 1
		r.Value, _ = events.DecisionValue(d)
		in.Ledger[0].Decision, in.Ledger[0].Offset = r.Value, 1
	}
	in.Usernames[0].At.Offset = 1
	in.Stored[recs[0].Partition] = 2
	in.Ends[recs[0].Partition] = 2
	expectOnly(t, Check(in), PropLogOrder, PropReplayEqual, PropAllDecided)
}

func TestCheckProjectionDiffersFromReplay(t *testing.T) {
	in := world(t, collisions(t))
	in.Usernames = in.Usernames[:1]
	expectOnly(t, Check(in), PropReplayEqual)
}

func TestCheckUndecided(t *testing.T) {
	in := world(t, collisions(t))
	extra := claimRec(t, 0, uuid.NewString(), u3, "erin")
	extra.Offset = in.Ends[extra.Partition]
	in.Claims = append(in.Claims, extra)
	in.Ends[extra.Partition]++
	rep := Check(in)
	expectOnly(t, rep, PropAllDecided)
	if len(rep.Undecided) != 1 {
		t.Errorf("undecided %v, want the one claim", rep.Undecided)
	}
}

func TestModelDecides(t *testing.T) {
	recs := collisions(t)
	poison := &kgo.Record{Topic: events.TopicClaims, Partition: 2, Offset: 50, Key: []byte("x"), Value: []byte("not json"),
		Headers: []kgo.RecordHeader{{Key: events.HeaderType, Value: []byte(events.TypeClaimSubmitted)}}}
	wrong := claimRec(t, 60, uuid.NewString(), u1, "frank")
	wrong.Partition = (wrong.Partition + 1) % testPartitions
	m := Replay(append(recs, poison, wrong), testPartitions)
	got := func(r *kgo.Record) string {
		v := m.Emitted[Position{r.Partition, r.Offset}]
		return resultOf(v) + "/" + v.Conflicts
	}
	for i, want := range []string{"registered/", "taken/alice", "confusable/alice", "registered/", "request_conflict/", "registered/"} {
		if g := got(recs[i]); g != want {
			t.Errorf("claim %d: %s, want %s", i, g, want)
		}
	}
	if g := got(poison); g != "invalid/" {
		t.Errorf("poison: %s", g)
	}
	if id := m.RequestIDs[Position{2, 50}]; id != positionID(Position{2, 50}) {
		t.Errorf("poison request_id %s", id)
	}
	if g := got(wrong); g != "invalid/" {
		t.Errorf("wrong partition: %s", g)
	}
	if v := m.Emitted[Position{recs[3].Partition, recs[3].Offset}]; v.At != (Position{recs[0].Partition, recs[0].Offset}) {
		t.Errorf("retry should copy the first decision, got %s", v)
	}
}

func TestCheckStaleWrite(t *testing.T) {
	in := world(t, collisions(t))
	in.StaleWrites = []string{"claim_partitions 1: next_offset 200 → 150, owner_epoch 3 → 3"}
	expectOnly(t, Check(in), PropNoStaleWriter)
}

func TestCheckAnswerPastItsBound(t *testing.T) {
	in := world(t, collisions(t))
	start := time.Now()
	slow := in.Ops[0]
	slow.ID, slow.Kind, slow.Result = 96, KindRetry, ResultUnknown
	slow.Wait, slow.Invoke, slow.Complete = 2*time.Second, start, start.Add(2*time.Second+AnswerBound+time.Second)
	in.Ops = append(in.Ops, slow)
	expectOnly(t, Check(in), PropAnsweredInTime)

	in = world(t, collisions(t))
	onTime := slow
	onTime.Complete = start.Add(2*time.Second + AnswerBound - time.Second) // a 503 just inside the bound
	in.Ops = append(in.Ops, onTime)
	expectOnly(t, Check(in))
}

// TestCheckWrongPartitionThenRight: a payload rejected invalid in the
// wrong partition and registered in its own is answered registered; an
// answer of invalid contradicts the name the user holds.
func TestCheckWrongPartitionThenRight(t *testing.T) {
	in := world(t, collisions(t))
	reg := in.Ops[0] // u1's "alice", registered in its own partition
	var row LedgerRow
	for _, l := range in.Ledger {
		if l.RequestID == reg.RequestID {
			row = l
		}
	}
	if row.RequestID == "" {
		t.Fatal("no ledger row for the registered request")
	}
	wrong := row
	wrong.Partition = (row.Partition + 1) % testPartitions
	wrong.Offset = 999
	d, err := json.Marshal(&events.Decision{RequestID: reg.RequestID, UserID: reg.UserID, Username: reg.Username, Outcome: events.OutcomeRejected,
		Reason: events.ReasonInvalid, Detail: "claim is in the wrong partition", ClaimPartition: wrong.Partition, ClaimOffset: 999, PolicyVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	wrong.Decision = d
	in.Ledger = append([]LedgerRow{wrong}, in.Ledger...)
	retry := reg
	retry.ID, retry.Kind = 95, KindRetry
	in.Ops = append(in.Ops, retry)
	rep := Check(in)
	if rep.Counts[PropAnswersAgree] != 0 {
		t.Errorf("registered answers flagged although the payload won its name: %v", rep.Examples[PropAnswersAgree])
	}
	bad := retry
	bad.ID, bad.Result = 94, ResultInvalid
	in.Ops = append(in.Ops, bad)
	if rep := Check(in); rep.Counts[PropAnswersAgree] == 0 {
		t.Error("an invalid answer for a payload that won its name was not flagged")
	}
}

// TestCheckRefusedNamesNeedNoDecision: a name the API refuses itself (422
// invalid, nothing published) agrees with the durable decisions, which
// have nothing for it; an "invalid" answer for a name the policy accepts
// does not.
func TestCheckRefusedNamesNeedNoDecision(t *testing.T) {
	in := world(t, collisions(t))
	refused := Op{ID: 900, Kind: KindNew, RequestID: uuid.NewString(), UserID: u2, Username: "Iumen11", Result: ResultInvalid}
	in.Ops = append(in.Ops, refused)
	expectOnly(t, Check(in))
	reused := refused // r1 is in the ledger with another name: the API still answers invalid first
	reused.ID, reused.Kind, reused.RequestID = 902, KindReuse, r1
	in.Ops = append(in.Ops, reused)
	expectOnly(t, Check(in))
	wrong := refused
	wrong.ID, wrong.RequestID, wrong.Username = 901, uuid.NewString(), "lumen11"
	in.Ops = append(in.Ops, wrong)
	expectOnly(t, Check(in), PropAnswersAgree)
}

// TestCheckWrongPartitionRetryAfterReuse is chaos seed 4's history: a
// foreign producer writes a claim for one name to the wrong partition
// (rejected invalid there), its request_id is then reused through the API
// for another name whose key falls in the first name's own partition, and
// the first name is then retried through the API. Its own partition has
// already decided the request_id for the other name, so the retry is a
// request_conflict (docs/design.md, "A request_id decided in several
// partitions"), not invalid (a decision of another partition) and not a
// decision on its merits.
func TestCheckWrongPartitionRetryAfterReuse(t *testing.T) {
	own := events.Partition([]byte("alice"), testPartitions)
	other := ""
	for i := 0; other == ""; i++ {
		if n := "p4-" + string(rune('a'+i%26)) + string(rune('a'+i/26)); events.Partition([]byte(n), testPartitions) == own {
			other = n
		}
	}
	id, user := uuid.NewString(), uuid.NewString()
	poison := claimRec(t, 0, id, user, other)
	poison.Partition = (own + 1) % testPartitions // murmur2 not used
	recs := append([]*kgo.Record{poison}, logOf(t,
		[3]string{id, user, "alice"}, // the reuse, decided on its merits in partition own
		[3]string{id, user, other},   // the retry of the poison, in partition own too
	)...)
	in := world(t, recs)
	for i, op := range in.Ops {
		if op.Username == other && op.Result == ResultInvalid { // the poison record: no answer
			in.Ops[i].Kind, in.Ops[i].Result = KindPoison, ResultUnknown
		}
	}
	var retry *Op
	for i, op := range in.Ops {
		if op.Username == other && op.Kind == KindNew {
			retry = &in.Ops[i]
		}
	}
	if retry == nil || retry.Result != ResultRequestConflict {
		t.Fatalf("the model did not decide the retry request_conflict: %+v", in.Ops)
	}
	expectOnly(t, Check(in))

	for _, wrong := range []string{ResultInvalid, ResultRegistered} {
		bad := *retry
		bad.ID, bad.Kind, bad.Result = 900, KindRetry, wrong
		in := world(t, recs)
		in.Ops = append(in.Ops[:0:0], bad)
		if rep := Check(in); rep.Counts[PropAnswersAgree] == 0 {
			t.Errorf("a retry of %q answered %s was not flagged", other, wrong)
		}
	}
}

// upgradeLog is a registry started under policy version 1 that moves to
// version 2: "cl0ud" (u1) and "cloud" (u2) are two names under version 1
// and one key ("cloud") under version 2, so the upgrade carries them into
// a grandfathered group. A claim during the freeze is answered
// policy_upgrading and retried after; after activation u1 claims
// "cl0ud" again (registered: a member keeps its name), u3 "c1oud"
// (confusable: nobody new gets the key) and u2 "CLOUD" (registered).
func upgradeLog(t *testing.T) []*kgo.Record {
	t.Helper()
	next := map[int32]int64{}
	var out []*kgo.Record
	add := func(r *kgo.Record) {
		r.Offset = next[r.Partition]
		next[r.Partition]++
		out = append(out, r)
	}
	claim := func(version int, id, user, typed string) *kgo.Record {
		p, _ := username.ForVersion(version)
		n, err := p.Normalize(typed)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := events.ClaimRecord(&events.ClaimSubmitted{RequestID: id, UserID: user, Username: typed, Canonical: n.Canonical, Key: n.Key, PolicyVersion: version})
		if err != nil {
			t.Fatal(err)
		}
		rec.Partition = events.Partition(rec.Key, testPartitions)
		return rec
	}
	marker := func(typ string, p int32, carried int) *kgo.Record {
		key := ""
		for i := 0; ; i++ {
			if key = "policy-marker/" + strconv.Itoa(i); events.Partition([]byte(key), testPartitions) == p {
				break
			}
		}
		rec, err := events.CommandRecord(typ, &events.ClaimSubmitted{RequestID: uuid.NewString(), Username: key, Key: key, PolicyVersion: 1,
			Upgrade: &events.PolicyChange{To: 2, Partition: int(p), Carried: carried}})
		if err != nil {
			t.Fatal(err)
		}
		rec.Partition = p
		return rec
	}
	carry := func(won *kgo.Record) *kgo.Record {
		c, _ := events.DecodeClaim(won)
		p2, _ := username.ForVersion(2)
		n, _ := p2.Normalize(c.Username)
		at := time.Unix(1, 0).UTC()
		rec, err := events.CommandRecord(events.TypeHolderCarried, &events.ClaimSubmitted{RequestID: uuid.NewString(), UserID: c.UserID, Username: c.Username,
			Canonical: n.Canonical, Key: n.Key, PolicyVersion: 2, Carry: &events.Carry{Kind: events.CarryHolder, To: 2, RequestID: c.RequestID,
				GrantedUnder: 1, Valid: true, Partition: won.Partition, Offset: won.Offset, OldKey: c.Key, At: &at}})
		if err != nil {
			t.Fatal(err)
		}
		rec.Partition = events.Partition(rec.Key, testPartitions)
		return rec
	}
	w1, w2 := claim(1, r1, u1, "cl0ud"), claim(1, r2, u2, "cloud")
	add(w1)
	add(w2)
	for p := range int32(testPartitions) {
		add(marker(events.TypePolicyFreezing, p, 0))
	}
	frozen := uuid.NewString()
	add(claim(1, frozen, u3, "c1oud")) // answered policy_upgrading
	c1, c2 := carry(w1), carry(w2)
	add(c1)
	add(c2)
	for p := range int32(testPartitions) {
		n := 0
		for _, c := range []*kgo.Record{c1, c2} {
			if c.Partition == p {
				n++
			}
		}
		add(marker(events.TypePolicyActivating, p, n))
	}
	add(claim(2, r3, u1, "cl0ud"))
	add(claim(2, frozen, u3, "c1oud")) // the retry, decided afresh
	add(claim(2, r4, u2, "CLOUD"))
	return out
}

// TestCheckUpgradeCarriedGroup: the correct world of an upgrade, with a
// grandfathered group of two holders under one key, a policy_upgrading
// answer and its retry, is accepted; the model decides as the rules say.
func TestCheckUpgradeCarriedGroup(t *testing.T) {
	recs := upgradeLog(t)
	in := worldFrom(t, recs, 1)
	rep := Check(in)
	expectOnly(t, rep)
	m := ReplayFrom(recs, testPartitions, 1)
	if g := m.Groups["cloud"]; len(g) != 2 || g["cl0ud"] != u1 || g["cloud"] != u2 {
		t.Errorf("grandfathered group of cloud: %v, want cl0ud to u1 and cloud to u2", g)
	}
	results := map[string]string{}
	upgrading := 0
	for _, r := range recs {
		v := m.Emitted[Position{r.Partition, r.Offset}]
		if v.Reason == events.ReasonPolicyUpgrading {
			upgrading++
			continue
		}
		if v.Username != "" && v.UserID != "" && v.Outcome != events.OutcomeCarried {
			results[v.UserID+" "+v.Username] = resultOf(v)
		}
	}
	want := map[string]string{u1 + " cl0ud": ResultRegistered, u2 + " cloud": ResultRegistered, u3 + " c1oud": ResultConfusable, u2 + " CLOUD": ResultRegistered}
	for k, w := range want {
		if results[k] != w {
			t.Errorf("%s: %q, want %q", k, results[k], w)
		}
	}
	if upgrading != 1 {
		t.Errorf("%d policy_upgrading answers, want 1", upgrading)
	}
	if len(in.Usernames) != 2 || rep.Holders != 2 {
		t.Errorf("usernames %v, want the two carried holders", in.Usernames)
	}
}

// TestCheckUpgradeSecondHolderJoinsGroup: after activation a third user
// is granted "c1oud", whose key is the grandfathered group's: property (a)
// finds it (the group is allowed only as carried).
func TestCheckUpgradeSecondHolderJoinsGroup(t *testing.T) {
	recs := upgradeLog(t)
	in := worldFrom(t, recs, 1)
	last := recs[len(recs)-2] // the retry of u3's "c1oud", rejected confusable
	at := Position{last.Partition, last.Offset}
	in.Usernames = append(in.Usernames, Holding{Canonical: "c1oud", Key: "cloud", UserID: u3, RequestID: ReplayFrom(recs, testPartitions, 1).RequestIDs[at], At: at})
	expectOnly(t, Check(in), PropSingleHolder, PropReplayEqual)
}

// TestCheckUpgradeVersionOneClaimAfterActivation: a registry that, after
// the activation, registers "c1oud" to a third user (as one that forgot
// the grandfathered group would) is caught by the model (f) and by (a).
func TestCheckUpgradeVersionOneClaimAfterActivation(t *testing.T) {
	recs := upgradeLog(t)
	in := worldFrom(t, recs, 1)
	// Publish u3's retry as registered, as a registry still deciding
	// under version 1 (where c1oud's key is cloud, free in its
	// partition) might.
	for _, r := range in.Registrations {
		d, err := events.DecodeDecision(r)
		if err != nil || d.UserID != u3 || d.Reason != events.ReasonConfusable {
			continue
		}
		d.Outcome, d.Reason, d.Conflicts, d.HolderRequestID = events.OutcomeRegistered, "", "", d.RequestID
		b, _ := events.DecisionValue(d)
		r.Value = b
		for i := range r.Headers {
			if r.Headers[i].Key == events.HeaderType {
				r.Headers[i].Value = []byte(d.Type())
			}
		}
	}
	rep := Check(in)
	if rep.Counts[PropLogOrder] == 0 || rep.Counts[PropSingleHolder] == 0 {
		t.Errorf("a grant inside a grandfathered group after activation not found: %v %v", rep.Counts, rep.Examples)
	}
}

// TestCheckUpgradeAnswerStored: a registry that stored its
// policy_upgrading answer in the ledger (it must publish it only, so the
// retry is decided afresh) is caught by (d) (two ledger rows for the
// request in its partition) and (b) (the answer of the retry disagrees
// with the first row).
func TestCheckUpgradeAnswerStored(t *testing.T) {
	recs := upgradeLog(t)
	in := worldFrom(t, recs, 1)
	for _, r := range in.Registrations {
		d, err := events.DecodeDecision(r)
		if err == nil && d.Reason == events.ReasonPolicyUpgrading {
			in.Ledger = append(in.Ledger, LedgerRow{RequestID: d.RequestID, Partition: d.ClaimPartition, Offset: d.ClaimOffset, UserID: d.UserID, Username: d.Username, Decision: r.Value})
		}
	}
	rep := Check(in)
	if rep.Counts[PropOneDecision] == 0 || rep.Counts[PropAnswersAgree] == 0 {
		t.Errorf("a stored policy_upgrading answer not found: %v %v", rep.Counts, rep.Examples)
	}
}

// TestCheckUpgradeRefusedThenAccepted: a name version 1 refuses
// ("josé_") answered 422 invalid by the API before the upgrade (nothing
// published) and registered under version 2 after it is not an anomaly:
// the policy changed between the answers (chaos --upgrade seed 3). The
// same pair of answers for a name both versions accept is one.
func TestCheckUpgradeRefusedThenAccepted(t *testing.T) {
	if _, err := username.MustVersion(1).Normalize("josé_"); err == nil {
		t.Fatal(`version 1 accepts "josé_"; the test needs a name it refuses`)
	}
	for _, c := range []struct {
		name string
		want []string
	}{{"josé_", nil}, {"josh", []string{PropAnswersAgree}}} {
		recs := upgradeLog(t)
		id, user := uuid.NewString(), uuid.NewString()
		n, err := username.MustVersion(2).Normalize(c.name)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := events.ClaimRecord(&events.ClaimSubmitted{RequestID: id, UserID: user, Username: c.name, Canonical: n.Canonical, Key: n.Key, PolicyVersion: 2})
		if err != nil {
			t.Fatal(err)
		}
		rec.Partition = events.Partition(rec.Key, testPartitions)
		for _, r := range recs {
			if r.Partition == rec.Partition {
				rec.Offset = max(rec.Offset, r.Offset+1)
			}
		}
		recs = append(recs, rec)
		in := worldFrom(t, recs, 1)
		refused := Op{ID: -1, Kind: KindReuse, RequestID: id, UserID: user, Username: c.name, Result: ResultInvalid, Code: 422, Invoke: time.Unix(0, 0)}
		in.Ops = append([]Op{refused}, in.Ops...)
		if last := in.Ops[len(in.Ops)-1]; last.Username != c.name || last.Result != ResultRegistered {
			t.Fatalf("%s: the claim under version 2 was answered %+v, want registered", c.name, last)
		}
		expectOnly(t, Check(in), c.want...)
	}
}

// shadowLog is a registry started under policy version 1 that moves to
// version 2, where "Iumen11" (u1) and "Ionic5" (u2) are refused and
// carried twice: under their canonical forms' keys and, as shadows,
// under the keys they are displayed as (those of lumen11 and lonic5).
// After the activation the shadow of Iumen11 is dropped (its holder
// released it), the one of Ionic5 moved to a new holding (a transfer; to
// the same user u2, since the claim model does not follow the transfer of
// the holder's own row), and a stale drop (of a holding that never was)
// changes nothing. It returns the log and the transfer's request_id.
func shadowLog(t *testing.T) ([]*kgo.Record, string) {
	t.Helper()
	next := map[int32]int64{}
	var out []*kgo.Record
	add := func(r *kgo.Record) {
		r.Partition = events.Partition(r.Key, testPartitions)
		r.Offset = next[r.Partition]
		next[r.Partition]++
		out = append(out, r)
	}
	v1, v2 := username.MustVersion(1), username.MustVersion(2)
	type won struct {
		rec  *kgo.Record
		c    *events.ClaimSubmitted
		name username.Username
	}
	var wins []won
	for _, w := range [][3]string{{r1, u1, "Iumen11"}, {r2, u2, "Ionic5"}} {
		n, err := v1.Normalize(w[2])
		if err != nil {
			t.Fatal(err)
		}
		c := &events.ClaimSubmitted{RequestID: w[0], UserID: w[1], Username: w[2], Canonical: n.Canonical, Key: n.Key, PolicyVersion: 1}
		rec, _ := events.ClaimRecord(c)
		add(rec)
		inspected, _ := v2.Inspect(w[2])
		wins = append(wins, won{rec, c, inspected})
	}
	marker := func(typ string, p int32, carried int) {
		key := ""
		for i := 0; ; i++ {
			if key = "policy-marker/" + strconv.Itoa(i); events.Partition([]byte(key), testPartitions) == p {
				break
			}
		}
		rec, _ := events.CommandRecord(typ, &events.ClaimSubmitted{RequestID: uuid.NewString(), Username: key, Key: key, PolicyVersion: 1,
			Upgrade: &events.PolicyChange{To: 2, Partition: int(p), Carried: carried}})
		add(rec)
	}
	for p := range int32(testPartitions) {
		marker(events.TypePolicyFreezing, p, 0)
	}
	carried := map[int32]int{}
	at := time.Unix(1, 0).UTC()
	for _, w := range wins {
		shown, _ := v2.ShownKey(w.c.Username)
		for kind, key := range map[string]string{events.CarryHolder: w.name.Key, events.CarryShadow: shown} {
			rec, _ := events.CommandRecord(events.TypeHolderCarried, &events.ClaimSubmitted{RequestID: uuid.NewString(), UserID: w.c.UserID,
				Username: w.c.Username, Canonical: w.name.Canonical, Key: key, PolicyVersion: 2, Carry: &events.Carry{Kind: kind, To: 2,
					RequestID: w.c.RequestID, GrantedUnder: 1, Partition: w.rec.Partition, Offset: w.rec.Offset, OldKey: w.c.Key, At: &at}})
			add(rec)
			carried[rec.Partition]++
		}
	}
	for p := range int32(testPartitions) {
		marker(events.TypePolicyActivating, p, carried[p])
	}
	follow := func(w won, action, holderRequest, user, cause string) {
		shown, _ := v2.ShownKey(w.c.Username)
		f := &events.ShadowFollow{Action: action, HolderRequestID: holderRequest, HolderUserID: w.c.UserID, Cause: cause}
		if action == events.ShadowTransfer {
			f.RegisteredAt = &at
		}
		rec, _ := events.CommandRecord(events.TypeShadowFollowing, &events.ClaimSubmitted{RequestID: uuid.NewString(), UserID: user,
			Username: w.c.Username, Canonical: w.name.Canonical, Key: shown, PolicyVersion: 2, Shadow: f})
		add(rec)
	}
	transfer := uuid.NewString()
	follow(wins[0], events.ShadowDrop, uuid.NewString(), u1, uuid.NewString()) // stale: another holding
	follow(wins[0], events.ShadowDrop, r1, u1, uuid.NewString())
	follow(wins[1], events.ShadowTransfer, r2, u2, transfer)
	return out, transfer
}

// TestCheckShadowsFollowTheirNames: the model follows a shadow's drop and
// transfer (and ignores a stale follow-up), a correct world is accepted,
// and a projection that kept the dropped shadow is caught.
func TestCheckShadowsFollowTheirNames(t *testing.T) {
	recs, transfer := shadowLog(t)
	m := ReplayFrom(recs, testPartitions, 1)
	var outcomes []string
	for _, r := range recs {
		if events.TypeOf(r) == events.TypeShadowFollowing {
			v := m.Emitted[Position{r.Partition, r.Offset}]
			outcomes = append(outcomes, v.Outcome+" "+v.Reason)
		}
	}
	if want := []string{"rejected not_held", "shadow_dropped ", "shadow_transferred "}; strings.Join(outcomes, ",") != strings.Join(want, ",") {
		t.Errorf("the follow-ups' verdicts: %q, want %q", outcomes, want)
	}
	if len(m.Shadows) != 1 {
		t.Fatalf("shadows after the follow-ups: %v, want Ionic5's alone", m.Shadows)
	}
	for _, h := range m.Shadows {
		if h.Key != "lonic5" || h.UserID != u2 || h.RequestID != transfer {
			t.Errorf("Ionic5's shadow after the transfer: %+v", h)
		}
	}
	if g := m.Groups["lurnenll"]; len(g) != 0 {
		t.Errorf("lumen11's key still has a group after Iumen11's shadow was dropped: %v", g)
	}
	expectOnly(t, Check(worldFrom(t, recs, 1)))

	// A projection that kept Iumen11's dropped shadow.
	in := worldFrom(t, recs, 1)
	for _, r := range recs {
		if c, err := events.DecodeClaim(r); err == nil && events.TypeOf(r) == events.TypeHolderCarried && c.Carry.Kind == events.CarryShadow && c.Username == "Iumen11" {
			in.Usernames = append(in.Usernames, Holding{Canonical: c.Canonical, Key: c.Key, UserID: u1, RequestID: r1, At: Position{r.Partition, r.Offset}})
		}
	}
	if rep := Check(in); rep.Anomalies() == 0 {
		t.Error("a projection that kept a dropped shadow was not flagged")
	}
}
