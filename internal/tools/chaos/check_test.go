package chaos

import (
	"encoding/json"
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
	m := Replay(recs, testPartitions)
	in := &Input{Partitions: testPartitions, Claims: recs, Stored: map[int32]int64{}, Ends: map[int32]int64{}}
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
				ClaimPartition: v.At.Partition, ClaimOffset: v.At.Offset, PolicyVersion: username.Latest}
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
		if c, err := events.DecodeClaim(r); err == nil {
			in.Ops = append(in.Ops, Op{ID: len(in.Ops), Kind: KindNew, RequestID: c.RequestID, UserID: c.UserID, Username: c.Username,
				Result: resultOf(v), Canonical: v.Canonical, Invoke: time.Unix(0, 0)})
		}
	}
	for i, r := range in.Registrations {
		r.Offset = int64(i)
	}
	for _, h := range m.Holders {
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
