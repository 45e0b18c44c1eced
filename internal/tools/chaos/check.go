package chaos

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
)

// Properties, as numbered in docs/guarantees.md. Each Report counts the
// anomalies found for each; all must be 0.
const (
	PropSingleHolder   = "a" // at most one holder per canonical name and per skeleton, across every source
	PropAnswersAgree   = "b" // every answer for a request agrees, with the others and with the durable decision
	PropRegisteredHeld = "c" // every "registered" answer matches the final projection
	PropOneDecision    = "d" // every claim: exactly one ledger row, at least one registrations record, all identical
	PropNoOrphan       = "e" // no decision exists without its claim
	PropLogOrder       = "f" // decisions follow log order: the first valid claim wins; taken/confusable have an earlier winner
	PropReplayEqual    = "g" // projection = reference model = rebuild from registrations
	PropAllDecided     = "h" // no claim undecided after the final phase
	PropNoStaleWriter  = "i" // a partition's stored position only moves forward: no zombie wrote
	PropAnsweredInTime = "j" // every request answered within its ?wait plus the write bound, brokers down or not
	// (k) to (n), the lifecycle names': lifecycle.go.
)

// AnswerBound is how long after its ?wait a request may take to be
// answered: the API's 10 s write bound, plus 5 s for the rest (the ledger
// lookup of a retry, a busy machine).
const AnswerBound = 15 * time.Second

// Properties lists every property, in report order.
var Properties = []string{PropSingleHolder, PropAnswersAgree, PropRegisteredHeld, PropOneDecision, PropNoOrphan, PropLogOrder, PropReplayEqual, PropAllDecided, PropNoStaleWriter, PropAnsweredInTime,
	PropKeyOneHolder, PropNoGrantInHold, PropRenameOutcome, PropLifeProjection}

// PropertyNames describes each property in one line.
var PropertyNames = map[string]string{
	PropSingleHolder:   "one holder per name and per skeleton",
	PropAnswersAgree:   "answers for a request agree",
	PropRegisteredHeld: "registered answers match the projection",
	PropOneDecision:    "one durable decision per claim, copies identical",
	PropNoOrphan:       "no decision without its claim",
	PropLogOrder:       "first valid claim in log order wins",
	PropReplayEqual:    "projection = model = rebuild",
	PropAllDecided:     "every claim decided",
	PropNoStaleWriter:  "no stale writer moved a partition's position",
	PropAnsweredInTime: "every request answered within its bound",
	PropKeyOneHolder:   "lifecycle: one holder per key at every position",
	PropNoGrantInHold:  "lifecycle: no grant to another user inside a hold",
	PropRenameOutcome:  "lifecycle: every rename ends in exactly one outcome",
	PropLifeProjection: "lifecycle: projection = fold of the decisions",
}

// LedgerRow is a row of the requests table.
type LedgerRow struct {
	RequestID string
	Partition int32
	Offset    int64
	UserID    string
	Username  string
	Decision  []byte
}

// Input is everything collected at the end of a run.
type Input struct {
	Partitions    int
	Ops           []Op
	Claims        []*kgo.Record // the claims topic from the beginning
	Registrations []*kgo.Record // the registrations topic from the beginning
	Ledger        []LedgerRow   // the requests table
	Usernames     []Holding     // the usernames table
	Stored        map[int32]int64
	Ends          map[int32]int64 // claims log end offsets
	Outbox        int             // rows left in the outbox
	// StaleWrites are the updates of claim_partitions, recorded during
	// the run by a trigger (WatchProgress), that advanced a partition
	// without moving it forward or moved its epoch back: only a writer
	// with a stale epoch or offset (a zombie) can make one.
	StaleWrites []string
	// PolicyVersion is the username policy version every partition
	// started under: 0 means username.Latest; 1 in an upgrade run, whose
	// partitions move to Latest at their PolicyActivating records.
	PolicyVersion int
}

// maxExamples bounds the evidence kept per property.
const maxExamples = 5

// Report is what Check found.
type Report struct {
	Counts    map[string]int      // per property
	Examples  map[string][]string // per property, the records that show an anomaly
	Results   map[string]int      // operations by result
	Kinds     map[string]int      // operations by kind
	Undecided []string            // claims still undecided
	Claims    int
	Decisions int // distinct decisions in registrations
	Holders   int
}

// Anomalies is the sum of the property counts.
func (r *Report) Anomalies() int {
	n := 0
	for _, c := range r.Counts {
		n += c
	}
	return n
}

func (r *Report) add(prop, format string, args ...any) {
	r.Counts[prop]++
	if len(r.Examples[prop]) < maxExamples {
		r.Examples[prop] = append(r.Examples[prop], fmt.Sprintf(format, args...))
	}
}

// Print writes the report.
func (r *Report) Print(w interface{ Write([]byte) (int, error) }) {
	fmt.Fprintf(w, "claims in log: %d, distinct decisions published: %d, names held: %d\n", r.Claims, r.Decisions, r.Holders)
	fmt.Fprintf(w, "operations by result:%s\n", counts(r.Results))
	fmt.Fprintf(w, "operations by kind:%s\n", counts(r.Kinds))
	fmt.Fprintln(w, "properties (anomalies, all must be 0):")
	for _, p := range Properties {
		fmt.Fprintf(w, "  (%s) %-48s %d\n", p, PropertyNames[p], r.Counts[p])
		for _, ex := range r.Examples[p] {
			fmt.Fprintf(w, "      %s\n", strings.ReplaceAll(ex, "\n", "\n      "))
		}
	}
	fmt.Fprintf(w, "undecided claims: %d\n", len(r.Undecided))
	for i, u := range r.Undecided {
		if i == maxExamples {
			fmt.Fprintf(w, "  … and %d more\n", len(r.Undecided)-maxExamples)
			break
		}
		fmt.Fprintf(w, "  %s\n", u)
	}
}

func counts(m map[string]int) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, " %s=%d", k, m[k])
	}
	return b.String()
}

// published is one distinct decision on the registrations topic, with the
// bytes of every copy.
type published struct {
	verdict Verdict
	key     string // the first copy's record key
	carry   *events.Carry
	copies  [][]byte
	where   []string // registrations/<p>@<o> of each copy
}

// checker holds the indexes Check builds.
type checker struct {
	in      *Input
	r       *Report
	model   *Model
	claimAt map[Position]*kgo.Record
	pub     map[Position]map[string]*published // by claim position, then request_id
	pubByRP map[LedgerKey][]*published
	ledger  map[LedgerKey][]LedgerRow
	held    map[string]Holding   // the usernames table by canonical
	shadows map[Position]Holding // its shadow rows (a policy upgrade's), by position
	rows    []Holding            // for the lifecycle checks: every usernames row
}

// Check checks every property over in.
func Check(full *Input) *Report {
	in := splitLifecycle(full)
	c := &checker{in: in, r: &Report{Counts: map[string]int{}, Examples: map[string][]string{}, Results: map[string]int{}, Kinds: map[string]int{}}}
	for _, p := range Properties {
		c.r.Counts[p] = 0
	}
	for _, op := range full.Ops {
		c.r.Kinds[op.Kind]++
		switch op.Kind {
		case KindPoison:
		case KindLifecycle:
			c.r.Results[op.Command+":"+op.Result]++
		default:
			c.r.Results[op.Result]++
		}
	}
	c.index()
	c.singleHolder()
	c.answers()
	c.oneDecision()
	c.orphans()
	c.logOrder()
	c.replayEqual()
	c.allDecided()
	c.answeredInTime()
	for _, w := range c.in.StaleWrites {
		c.r.add(PropNoStaleWriter, "%s", w)
	}
	life := &checker{in: full, r: c.r, held: map[string]Holding{}, rows: full.Usernames}
	for _, h := range full.Usernames {
		life.held[h.Canonical] = h
	}
	life.lifecycleChecks()
	return c.r
}

func (c *checker) index() {
	c.model = ReplayFrom(c.in.Claims, c.in.Partitions, c.in.PolicyVersion)
	c.r.Claims = len(c.in.Claims)
	c.claimAt = map[Position]*kgo.Record{}
	for _, r := range c.in.Claims {
		c.claimAt[Position{r.Partition, r.Offset}] = r
	}
	c.pub, c.pubByRP = map[Position]map[string]*published{}, map[LedgerKey][]*published{}
	for _, rec := range c.in.Registrations {
		d, err := events.DecodeDecision(rec)
		where := fmt.Sprintf("registrations/%d@%d", rec.Partition, rec.Offset)
		if err != nil {
			c.r.add(PropNoOrphan, "%s is not a decision: %v", where, err)
			continue
		}
		v := verdictOf(d)
		byID := c.pub[v.At]
		if byID == nil {
			byID = map[string]*published{}
			c.pub[v.At] = byID
		}
		p := byID[v.RequestID]
		if p == nil {
			p = &published{verdict: v, key: string(rec.Key), carry: d.Carry}
			byID[v.RequestID] = p
			c.pubByRP[LedgerKey{v.RequestID, v.At.Partition}] = append(c.pubByRP[LedgerKey{v.RequestID, v.At.Partition}], p)
			c.r.Decisions++
		}
		p.copies, p.where = append(p.copies, rec.Value), append(p.where, where)
	}
	c.ledger = map[LedgerKey][]LedgerRow{}
	for _, l := range c.in.Ledger {
		k := LedgerKey{l.RequestID, l.Partition}
		c.ledger[k] = append(c.ledger[k], l)
	}
	c.held, c.shadows = map[string]Holding{}, map[Position]Holding{}
	for _, h := range c.in.Usernames {
		if _, ok := c.model.Shadows[h.At]; ok {
			c.shadows[h.At] = h // the holder's second row; (g) compares them
			continue
		}
		c.held[h.Canonical] = h
	}
	c.r.Holders = len(c.held)
}

// grant is one source's claim that someone holds a name; key is its
// skeleton under the policy version in force where it was decided,
// prefixed with that version ("" when it cannot be told: it then counts
// for the name only).
type grant struct {
	canonical, key, user, source string
}

// singleHolder is (a): per canonical name one user, per skeleton one
// (canonical, user), over every source together. Skeletons are computed
// under the policy version in force where each grant was decided, and a
// skeleton of the new version may have several holders only if they are
// exactly members of the grandfathered group its activation made (the
// holders the upgrade carried there).
func (c *checker) singleHolder() {
	var gs []grant
	for _, op := range c.in.Ops {
		if op.Result == ResultRegistered {
			canonical := cmp.Or(op.Canonical, canonicalOf(op.Username))
			gs = append(gs, grant{canonical, c.answerKey(op, canonical), op.UserID, fmt.Sprintf("answer op#%d request=%s (%s)", op.ID, op.RequestID, op.Kind)})
		}
	}
	for _, byID := range c.pub {
		for _, p := range byID {
			if v := p.verdict; v.Outcome == events.OutcomeRegistered {
				gs = append(gs, grant{v.Canonical, c.versionedKey(v.Canonical, v.At), v.UserID, fmt.Sprintf("%s: %s", p.where[0], v)})
			}
		}
	}
	for _, rows := range c.ledger {
		for _, l := range rows {
			if v, ok := decodeVerdict(l.Decision); ok && v.Outcome == events.OutcomeRegistered {
				gs = append(gs, grant{v.Canonical, c.versionedKey(v.Canonical, v.At), v.UserID, fmt.Sprintf("ledger: %s", v)})
			}
		}
	}
	for _, h := range c.in.Usernames {
		key := keyOf(h.Canonical)
		if c.upgradeRun() {
			// The projection is the final state: every row is under its
			// partition's last version.
			key = fmt.Sprintf("v%d:%s", c.model.VersionAt(Position{h.At.Partition, math.MaxInt64}), h.Key)
		}
		gs = append(gs, grant{h.Canonical, key, h.UserID, fmt.Sprintf("usernames: %q held by %s request=%s at %s", h.Canonical, h.UserID, h.RequestID, h.At)})
	}
	c.duplicates(gs, func(g grant) string { return g.canonical }, func(g grant) string { return g.user }, "name", nil)
	var keyed []grant
	for _, g := range gs {
		if g.key != "" {
			keyed = append(keyed, g)
		}
	}
	c.duplicates(keyed, func(g grant) string { return g.key }, func(g grant) string { return g.canonical + " to " + g.user }, "skeleton", c.grandfathered)
}

// upgradeRun reports whether the run started under an older policy
// version than the latest (chaos --upgrade).
func (c *checker) upgradeRun() bool { return c.model.Start != username.Latest }

// versionedKey is grant's key for canonical decided at at.
func (c *checker) versionedKey(canonical string, at Position) string {
	if !c.upgradeRun() {
		return keyOf(canonical)
	}
	v := c.model.VersionAt(at)
	return fmt.Sprintf("v%d:%s", v, c.keyAt(canonical, at))
}

// answerKey is the key of a registered answer: under the version of the
// durable decision it reports (its request's ledger row for its payload);
// "" in an upgrade run when there is none, since the version it was
// decided under cannot be told ((b) finds such an answer).
func (c *checker) answerKey(op Op, canonical string) string {
	if !c.upgradeRun() {
		return keyOf(canonical)
	}
	for k, rows := range c.ledger {
		if k.RequestID != op.RequestID {
			continue
		}
		for _, l := range rows {
			if v, ok := decodeVerdict(l.Decision); ok && v.UserID == op.UserID && v.Username == op.Username && v.Outcome == events.OutcomeRegistered {
				return c.versionedKey(v.Canonical, v.At)
			}
		}
	}
	return ""
}

// grandfathered reports whether the holders of a new version's skeleton
// (by "canonical to user") are all members of the grandfathered group
// the activation made for it.
func (c *checker) grandfathered(key string, holders map[string]grant) bool {
	_, k, ok := strings.Cut(key, ":")
	group := c.model.Groups[k]
	if !ok || len(group) == 0 {
		return false
	}
	for _, g := range holders {
		if user, ok := group[g.canonical]; !ok || user != g.user {
			return false
		}
	}
	return true
}

func (c *checker) duplicates(gs []grant, group, holder func(grant) string, what string, allowed func(string, map[string]grant) bool) {
	by := map[string]map[string]grant{}
	for _, g := range gs {
		k := group(g)
		if by[k] == nil {
			by[k] = map[string]grant{}
		}
		if _, ok := by[k][holder(g)]; !ok {
			by[k][holder(g)] = g
		}
	}
	for _, k := range slices.Sorted(maps.Keys(by)) {
		if len(by[k]) > 1 && (allowed == nil || !allowed(k, by[k])) {
			var lines []string
			for _, h := range slices.Sorted(maps.Keys(by[k])) {
				lines = append(lines, by[k][h].source)
			}
			c.r.add(PropSingleHolder, "%s %q granted to %d holders:\n%s", what, k, len(by[k]), strings.Join(lines, "\n"))
		}
	}
}

// answers is (b) and (c).
func (c *checker) answers() {
	type payload struct{ requestID, userID, username string }
	first := map[payload]Op{}
	for _, op := range c.in.Ops {
		if !op.decisive() {
			continue
		}
		k := payload{op.RequestID, op.UserID, op.Username}
		if prev, ok := first[k]; !ok {
			first[k] = op
		} else if prev.Result != op.Result && c.refusedThenAccepted(prev, op) {
			first[k] = op // the upgrade made the name valid: later answers agree with this one
		} else if prev.Result != op.Result {
			c.r.add(PropAnswersAgree, "request %s answered %s (op#%d, api %d, %s) and %s (op#%d, api %d, %s)",
				op.RequestID, prev.Result, prev.ID, prev.API, prev.Kind, op.Result, op.ID, op.API, op.Kind)
		}
		if truth, why := c.truth(op); truth != op.Result {
			c.r.add(PropAnswersAgree, "op#%d (%s, api %d) request=%s user=%s name=%q answered %s, durable decision says %s: %s",
				op.ID, op.Kind, op.API, op.RequestID, op.UserID, op.Username, op.Result, truth, why)
		}
		if op.Result == ResultRegistered {
			canonical := cmp.Or(op.Canonical, canonicalOf(op.Username))
			h, ok := c.held[canonical]
			if c.upgradeRun() && (!ok || h.UserID != op.UserID) {
				// Granted under an older version: the upgrade carried
				// the name to its holder under the new one.
				h, ok = c.held[carriedCanonical(op.Username)]
			}
			if !ok || h.UserID != op.UserID {
				c.r.add(PropRegisteredHeld, "op#%d answered registered: %q to %s; projection: %+v", op.ID, canonical, op.UserID, h)
			}
		}
	}
}

// refusedThenAccepted reports whether, in an upgrade run, prev and op
// differ only because the policy changed between them: prev was refused
// invalid by the API under the starting version, which nothing publishes
// or stores, and the latest version accepts the name, so op, later, was
// decided on its merits. Every other pair of different answers for one
// payload is an anomaly.
func (c *checker) refusedThenAccepted(prev, op Op) bool {
	if !c.upgradeRun() || prev.Result != ResultInvalid || op.Result == ResultInvalid || prev.ID > op.ID {
		return false
	}
	_, errStart := policyOf(c.model.Start).Normalize(prev.Username)
	_, errLatest := policyOf(username.Latest).Normalize(op.Username)
	return errStart != nil && errLatest == nil
}

// truth is the result the durable decisions give op's payload, by the rule
// of docs/design.md ("A request_id decided in several partitions"): the
// API writes a claim to its key's partition, and only that partition's
// decision answers it. So the truth is that partition's ledger row for the
// request_id (the ledger keeps the first decision per request_id and
// partition): its result when it is for op's user and username, else
// request_conflict, which that partition's projector answers for another
// payload (and publishes without storing). It is invalid, with no
// decision, for a name the policy refuses, which the API answers itself.
//
// Decisions in other partitions answer nothing: a foreign producer's claim
// written to the wrong partition is rejected invalid there, and the same
// payload retried through the API is decided in its own partition, on its
// merits or as a request_conflict when that partition already decided the
// request_id for another name (chaos seed 4: "h0t4-7" and the poison
// "p4-383372" share partition 0, so the retry of the poison was rightly a
// request_conflict although its only stored decision was invalid).
//
// In an upgrade run the answer may come from before or after the request's
// partition changed versions (the API names the request under the version
// it reads): the truth is the one of the version that gives op's result,
// if any does.
func (c *checker) truth(op Op) (string, string) {
	if !c.upgradeRun() {
		return c.truthUnder(op, policyOf(username.Latest))
	}
	var first, why string
	for v := c.model.Start; v <= username.Latest; v++ {
		t, w := c.truthUnder(op, policyOf(v))
		if t == op.Result {
			return t, w
		}
		if v == c.model.Start {
			first, why = t, fmt.Sprintf("under version %d: %s", v, w)
		} else {
			why += fmt.Sprintf("; under version %d: %s: %s", v, t, w)
		}
	}
	return first, why
}

// truthUnder is truth when the API named op's username under policy.
func (c *checker) truthUnder(op Op, policy *username.Policy) (string, string) {
	name, err := policy.Normalize(op.Username)
	if err != nil {
		// The API refuses such a name itself, before it looks at the
		// ledger (even for a reused request_id), and publishes nothing.
		return ResultInvalid, "the username policy refuses it: " + err.Error()
	}
	own := events.Partition([]byte(name.Key), c.in.Partitions)
	var first *Verdict
	for _, l := range c.ledger[LedgerKey{op.RequestID, own}] {
		if v, ok := decodeVerdict(l.Decision); ok && (first == nil || v.At.Offset < first.At.Offset) {
			first = &v
		}
	}
	switch {
	case first == nil:
	case first.UserID == op.UserID && first.Username == op.Username:
		return resultOf(*first), "ledger " + first.String()
	default:
		return ResultRequestConflict, fmt.Sprintf("partition %d decided the request_id for another payload first: ledger %s", own, first)
	}
	var elsewhere []string
	for k, rows := range c.ledger {
		if k.RequestID != op.RequestID {
			continue
		}
		for _, l := range rows {
			if v, ok := decodeVerdict(l.Decision); ok {
				elsewhere = append(elsewhere, "ledger "+v.String())
			}
		}
	}
	slices.Sort(elsewhere)
	if len(elsewhere) > 0 {
		return "(none)", fmt.Sprintf("no ledger row for the request in its partition %d, only in others (which do not answer it): %s", own, strings.Join(elsewhere, "; "))
	}
	return "(none)", "no ledger row for the request"
}

func resultOf(v Verdict) string {
	if v.Outcome == events.OutcomeRegistered {
		return ResultRegistered
	}
	return v.Reason
}

// oneDecision is (d): every decided claim has exactly one ledger row for
// its request in its partition, and its decision is on registrations with
// every copy byte-identical to the ledger's bytes.
func (c *checker) oneDecision() {
	for _, at := range c.positions() {
		id := c.model.RequestIDs[at]
		k := LedgerKey{id, at.Partition}
		rows, pubs := c.ledger[k], c.pubByRP[k]
		if len(rows) == 0 && len(pubs) == 0 {
			continue // undecided: (h)
		}
		if emitted := c.model.Emitted[at]; emitted.Reason == events.ReasonPolicyUpgrading {
			// Published, never stored: a retry is decided afresh, so
			// the ledger may hold a later decision or none.
			if p := c.pub[at][id]; p != nil {
				c.identicalCopies(p)
			}
			continue
		}
		if len(rows) != 1 {
			c.r.add(PropOneDecision, "%s request=%s has %d ledger rows (want 1)%s", at, id, len(rows), describeRows(rows))
			continue
		}
		emitted := c.model.Emitted[at]
		p := c.pub[emitted.At][id]
		if p == nil {
			c.r.add(PropOneDecision, "%s request=%s: its decision (%s) is not on registrations", at, id, emitted)
			continue
		}
		c.identicalCopies(p)
		if emitted.Reason != events.ReasonRequestConflict && !bytes.Equal(rows[0].Decision, p.copies[0]) {
			c.r.add(PropOneDecision, "%s: ledger and registrations differ:\nledger %s\n%s %s", emitted.At, rows[0].Decision, p.where[0], p.copies[0])
		}
	}
	for k, ps := range c.pubByRP {
		if !sameStored(ps) {
			var lines []string
			for _, p := range ps {
				lines = append(lines, p.where[0]+": "+p.verdict.String())
			}
			c.r.add(PropOneDecision, "request %s in partition %d has %d different decisions on registrations:\n%s", k.RequestID, k.Partition, len(ps), strings.Join(lines, "\n"))
		}
	}
}

// identicalCopies adds a (d) anomaly when p's copies differ.
func (c *checker) identicalCopies(p *published) {
	for i, b := range p.copies {
		if !bytes.Equal(b, p.copies[0]) {
			c.r.add(PropOneDecision, "%s: copies differ:\n%s %s\n%s %s", p.verdict.At, p.where[0], p.copies[0], p.where[i], b)
			return
		}
	}
}

// sameStored reports whether ps hold one stored decision and otherwise
// request_conflicts and policy_upgrading answers (neither is stored), in
// any order.
func sameStored(ps []*published) bool {
	n := 0
	for _, p := range ps {
		if r := p.verdict.Reason; r != events.ReasonRequestConflict && r != events.ReasonPolicyUpgrading {
			n++
		}
	}
	return n <= 1
}

func describeRows(rows []LedgerRow) string {
	var b strings.Builder
	for _, l := range rows {
		fmt.Fprintf(&b, "\nledger %s", l.Decision)
	}
	return b.String()
}

// orphans is (e): every decision names a claim that exists, with its
// request_id.
func (c *checker) orphans() {
	check := func(what string, at Position, id string) {
		if _, ok := c.claimAt[at]; !ok {
			c.r.add(PropNoOrphan, "%s names %s, which is not in the claims log", what, at)
		} else if c.model.RequestIDs[at] != id {
			c.r.add(PropNoOrphan, "%s names %s, whose request is %s", what, at, c.model.RequestIDs[at])
		}
	}
	for at, byID := range c.pub {
		for id, p := range byID {
			check(p.where[0]+" ("+p.verdict.String()+")", at, id)
		}
	}
	for _, rows := range c.ledger {
		for _, l := range rows {
			check(fmt.Sprintf("ledger row request=%s", l.RequestID), Position{l.Partition, l.Offset}, l.RequestID)
		}
	}
	for _, h := range c.in.Usernames {
		if won, ok := c.model.Carried[h.At]; ok {
			// A carried holder: its row names the HolderCarried record
			// and the request that won the name.
			if won != h.RequestID {
				c.r.add(PropNoOrphan, "usernames row %q names %s, which carried request %s, and request %s", h.Canonical, h.At, won, h.RequestID)
			}
			continue
		}
		check(fmt.Sprintf("usernames row %q", h.Canonical), h.At, h.RequestID)
	}
}

// logOrder is (f): every published decision is the model's for its
// record, and every taken or confusable names a holder whose winning
// claim comes earlier in the log.
func (c *checker) logOrder() {
	for at, byID := range c.pub {
		for id, p := range byID {
			want, ok := c.model.Emitted[at]
			if p.verdict.Reason == events.ReasonRequestConflict {
				continue // a conflict names its own record; (d) and (g) cover it
			}
			if !ok || want.RequestID != id {
				continue // (e)
			}
			if want != p.verdict {
				c.r.add(PropLogOrder, "%s decided %s\nreference model: %s", p.where[0], p.verdict, want)
			}
			if r := p.verdict.Reason; (r == events.ReasonTaken || r == events.ReasonConfusable) && !c.beforeActivation(at) {
				if h, ok := c.held[p.verdict.Conflicts]; !ok || h.At.Partition != at.Partition || h.At.Offset >= at.Offset {
					c.r.add(PropLogOrder, "%s %s conflicts with %q, whose holder is %+v (not earlier in the log)", p.where[0], p.verdict, p.verdict.Conflicts, h)
				}
			}
		}
	}
}

// beforeActivation reports whether at was decided before its partition
// activated a new policy version: the final projection no longer holds
// that version's holders (the model's verdict, which (f) compares, does).
func (c *checker) beforeActivation(at Position) bool {
	a, ok := c.model.Activated[at.Partition]
	return ok && at.Offset <= a.Offset
}

// replayEqual is (g): the usernames table, the model and a projection
// rebuilt from registrations hold the same names, and the ledger equals
// the model's.
func (c *checker) replayEqual() {
	// The rebuild folds the published decisions as the projector does:
	// a partition's activation drops the holders it decided before and
	// makes the carried ones live.
	rebuilt := map[string]Holding{}
	for _, byID := range c.pub {
		for _, p := range byID {
			v := p.verdict
			switch {
			case c.beforeActivation(v.At) && v.Outcome == events.OutcomeCarried && p.carry != nil && p.carry.Kind == events.CarryHolder:
				rebuilt[v.Canonical] = Holding{Canonical: v.Canonical, Key: p.key, UserID: v.UserID, RequestID: p.carry.RequestID, At: v.At}
			case c.beforeActivation(v.At):
			case v.Outcome == events.OutcomeRegistered && v.Holder == v.RequestID:
				rebuilt[v.Canonical] = Holding{Canonical: v.Canonical, Key: c.keyAt(v.Canonical, v.At), UserID: v.UserID, RequestID: v.RequestID, At: v.At}
			}
		}
	}
	names := map[string]bool{}
	for _, m := range []map[string]Holding{c.held, c.model.Holders, rebuilt} {
		for k := range m {
			names[k] = true
		}
	}
	for _, n := range slices.Sorted(maps.Keys(names)) {
		pg, mo, re := c.held[n], c.model.Holders[n], rebuilt[n]
		if pg != mo || mo != re {
			c.r.add(PropReplayEqual, "name %q:\nprojection %s\nmodel      %s\nrebuild    %s", n, holding(pg), holding(mo), holding(re))
		}
	}
	for _, at := range slices.SortedFunc(maps.Keys(c.model.Shadows), comparePositions) {
		if want, got := c.model.Shadows[at], c.shadows[at]; want != got {
			c.r.add(PropReplayEqual, "shadow row at %s:\nprojection %s\nmodel      %s", at, holding(got), holding(want))
		}
	}
	for k, want := range c.model.Ledger {
		rows := c.ledger[k]
		if len(rows) == 0 {
			if c.decidedSomewhere(k) {
				c.r.add(PropReplayEqual, "ledger lacks request %s in partition %d; model: %s", k.RequestID, k.Partition, want)
			}
			continue
		}
		if v, ok := decodeVerdict(rows[0].Decision); !ok || v != want {
			c.r.add(PropReplayEqual, "ledger request %s in partition %d: %s\nmodel: %s", k.RequestID, k.Partition, rows[0].Decision, want)
		}
	}
	for k, rows := range c.ledger {
		if _, ok := c.model.Ledger[k]; !ok {
			c.r.add(PropReplayEqual, "ledger holds request %s in partition %d, which the model never stored: %s", k.RequestID, k.Partition, rows[0].Decision)
		}
	}
}

// keyAt is the skeleton of canonical under the policy version in force
// at at.
func (c *checker) keyAt(canonical string, at Position) string {
	n, err := policyOf(c.model.VersionAt(at)).Normalize(canonical)
	if err != nil {
		return canonical
	}
	return n.Key
}

// decidedSomewhere reports whether the registry decided anything for k;
// a claim decided nowhere is only undecided, which (h) counts.
func (c *checker) decidedSomewhere(k LedgerKey) bool { return len(c.pubByRP[k]) > 0 }

func holding(h Holding) string {
	if h == (Holding{}) {
		return "(none)"
	}
	return fmt.Sprintf("user=%s request=%s at %s", h.UserID, h.RequestID, h.At)
}

// allDecided is (h): every claim has a decision, every partition's stored
// position reached its log end and the outbox is empty.
func (c *checker) allDecided() {
	for _, at := range c.positions() {
		id := c.model.RequestIDs[at]
		k := LedgerKey{id, at.Partition}
		emitted := c.model.Emitted[at]
		stored := len(c.ledger[k]) > 0 || emitted.Reason == events.ReasonPolicyUpgrading // answered, not stored
		if !stored || c.pub[emitted.At][id] == nil {
			c.r.Counts[PropAllDecided]++
			c.r.Undecided = append(c.r.Undecided, fmt.Sprintf("%s request=%s (ledger rows %d, published %v)", at, id, len(c.ledger[k]), c.pub[emitted.At][id] != nil))
		}
	}
	for _, p := range slices.Sorted(maps.Keys(c.in.Ends)) {
		if c.in.Stored[p] != c.in.Ends[p] {
			c.r.add(PropAllDecided, "claims partition %d: stored next offset %d, log end %d", p, c.in.Stored[p], c.in.Ends[p])
		}
	}
	if c.in.Outbox > 0 {
		c.r.add(PropAllDecided, "%d decisions still in the outbox", c.in.Outbox)
	}
}

func comparePositions(a, b Position) int {
	return cmp.Or(cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
}

func (c *checker) positions() []Position {
	ps := slices.Collect(maps.Keys(c.claimAt))
	sort.Slice(ps, func(i, j int) bool {
		return ps[i].Partition < ps[j].Partition || ps[i].Partition == ps[j].Partition && ps[i].Offset < ps[j].Offset
	})
	return ps
}

func decodeVerdict(b []byte) (Verdict, bool) {
	d, err := events.DecodeDecision(&kgo.Record{Value: b, Headers: []kgo.RecordHeader{{Key: events.HeaderType, Value: []byte(events.TypeClaimRejected)}}})
	if err != nil {
		return Verdict{}, false
	}
	return verdictOf(d), true
}

func canonicalOf(typed string) string {
	n, err := username.Normalize(typed)
	if err != nil {
		return typed
	}
	return n.Canonical
}

// carriedCanonical is the canonical form a policy upgrade carries typed
// to under the latest version: the one it normalizes to, or the one
// Inspect computes for a name that version refuses.
func carriedCanonical(typed string) string {
	p := policyOf(username.Latest)
	if n, err := p.Normalize(typed); err == nil {
		return n.Canonical
	}
	if n, ok := p.Inspect(typed); ok {
		return n.Canonical
	}
	return typed
}

// keyOf is the skeleton of a canonical name.
func keyOf(canonical string) string {
	n, err := username.Normalize(canonical)
	if err != nil {
		return canonical
	}
	return n.Key
}

// answeredInTime finds requests that took longer than their ?wait plus
// AnswerBound: a node that holds a caller past the write bound (a broker
// down, a produce whose outcome is unknown) instead of answering 503.
func (c *checker) answeredInTime() {
	for _, op := range c.in.Ops {
		if op.Kind == KindPoison || op.Invoke.IsZero() || op.Complete.IsZero() {
			continue
		}
		if took := op.Complete.Sub(op.Invoke); took > op.Wait+AnswerBound {
			c.r.add(PropAnsweredInTime, "op %d (%s %s, wait %s) took %s: %d %s %s", op.ID, op.Kind, op.RequestID, op.Wait, took.Round(time.Millisecond), op.Code, op.Result, op.Error)
		}
	}
}
