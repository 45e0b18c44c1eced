package bench

import (
	"cmp"
	"fmt"
	"slices"
	"sync"

	"github.com/google/uuid"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
)

// Answer is one answer to a claim, reduced to what the check needs. The
// ids and the username are what was sent; the rest is what came back.
type Answer struct {
	RequestID uuid.UUID
	UserID    uuid.UUID
	Username  string // as sent
	Code      int    // HTTP status code
	Status    string // the body's "status"
	Reason    string // the body's "reason"
	Canonical string // the body's "canonical"; the sent username stands in when empty
}

// decisive reports whether a is a decision. 202 pending, 503 and anything
// else without a decision say nothing about the outcome, so they are
// compatible with every other answer.
func (a Answer) decisive() bool {
	return a.Status == events.OutcomeRegistered || a.Status == events.OutcomeRejected
}

// maxExamples bounds the examples a CheckResult carries, so a badly broken
// run does not print a million lines.
const maxExamples = 10

// CheckResult is what the correctness check found.
type CheckResult struct {
	Requests        int      `json:"requests"`         // distinct request_ids that got a decision
	Granted         int      `json:"granted"`          // distinct canonical names answered "registered"
	DuplicateGrants int      `json:"duplicate_grants"` // names (or look-alike families) granted to more than one holder
	Inconsistent    int      `json:"inconsistent"`     // request_ids whose decisions disagree
	Examples        []string `json:"examples,omitempty"`
}

// OK reports whether the check held. expectDuplicates tolerates duplicate
// grants (the naive baseline's race), never inconsistent answers.
func (r CheckResult) OK(expectDuplicates bool) bool {
	return r.Inconsistent == 0 && (expectDuplicates || r.DuplicateGrants == 0)
}

// Checker records answers and checks the two promises a claim API makes:
//
//   - a name is granted to one holder. Per confusable skeleton (the policy's
//     Key), at most one (canonical name, user_id) pair is answered
//     "registered". A retry, or the holder re-claiming its own name, is
//     answered "registered" again, which is fine: the holder is the same.
//   - a request_id gets one decision. Its decisive answers agree on status
//     and reason; 201 and 200 are both "registered", and 202 or 503 agree
//     with anything.
//
// It keeps one small entry per request_id and one per granted name, under
// a hundred bytes per claim: a few hundred MB for a 10-minute run at
// thousands of claims per second.
// Its methods are safe for concurrent use.
type Checker struct {
	mu       sync.Mutex
	outcomes map[string]uint8           // "status/reason" → small id
	names    []string                   // small id → "status/reason"
	requests map[uuid.UUID]requestState // by request_id
	grants   map[string]uuid.UUID       // canonical → first user answered "registered"
	others   map[string][]uuid.UUID     // canonical → further users, only for names granted twice
	examples []string
}

// requestState is the first decision seen for a request_id, compactly.
type requestState struct {
	outcome      uint8
	inconsistent bool
}

// NewChecker returns an empty Checker.
func NewChecker() *Checker {
	return &Checker{
		outcomes: map[string]uint8{},
		requests: map[uuid.UUID]requestState{},
		grants:   map[string]uuid.UUID{},
		others:   map[string][]uuid.UUID{},
	}
}

// Record adds one answer.
func (c *Checker) Record(a Answer) {
	if !a.decisive() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recordRequest(a)
	if a.Status == events.OutcomeRegistered {
		c.recordGrant(cmp.Or(a.Canonical, a.Username), a.UserID)
	}
}

func (c *Checker) recordRequest(a Answer) {
	id := c.intern(a.Status + "/" + a.Reason)
	prev, seen := c.requests[a.RequestID]
	switch {
	case !seen:
		c.requests[a.RequestID] = requestState{outcome: id}
	case prev.outcome != id && !prev.inconsistent:
		c.requests[a.RequestID] = requestState{outcome: prev.outcome, inconsistent: true}
		c.example("request_id %s answered %s, then %s", a.RequestID, c.names[prev.outcome], c.names[id])
	}
}

// intern maps an outcome to a byte. There are about ten outcomes; should a
// server invent more than 255, the rest share the last id, which can only
// hide an inconsistency between two invented outcomes.
func (c *Checker) intern(outcome string) uint8 {
	if id, ok := c.outcomes[outcome]; ok {
		return id
	}
	if len(c.names) == 255 {
		return 254
	}
	id := uint8(len(c.names))
	c.outcomes[outcome] = id
	c.names = append(c.names, outcome)
	return id
}

// recordGrant keeps one user per name, and a list only for the rare name
// answered "registered" to several: a correct run has none of those.
func (c *Checker) recordGrant(canonical string, user uuid.UUID) {
	first, ok := c.grants[canonical]
	switch {
	case !ok:
		c.grants[canonical] = user
	case first != user && !slices.Contains(c.others[canonical], user):
		c.others[canonical] = append(c.others[canonical], user)
	}
}

func (c *Checker) example(format string, args ...any) {
	if len(c.examples) < maxExamples {
		c.examples = append(c.examples, fmt.Sprintf(format, args...))
	}
}

// holder is one (canonical name, user) pair answered "registered".
type holder struct {
	canonical string
	user      uuid.UUID
}

// Result checks what was recorded. Grants are grouped by skeleton only
// here, after the run, because the policy is too costly to apply to every
// answer while the load generator shares the machine with the server.
func (c *Checker) Result() CheckResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := CheckResult{Requests: len(c.requests), Granted: len(c.grants)}
	for _, st := range c.requests {
		if st.inconsistent {
			r.Inconsistent++
		}
	}
	r.Examples = slices.Clone(c.examples)
	for _, holders := range c.holdersByKey() {
		if len(holders) > 1 {
			r.DuplicateGrants++
			if len(r.Examples) < maxExamples {
				r.Examples = append(r.Examples, describeDuplicate(holders))
			}
		}
	}
	return r
}

// holdersByKey groups the granted names by confusable skeleton.
func (c *Checker) holdersByKey() map[string][]holder {
	byKey := make(map[string][]holder, len(c.grants))
	for canonical, first := range c.grants {
		k := keyOf(canonical)
		byKey[k] = append(byKey[k], holder{canonical, first})
		for _, u := range c.others[canonical] {
			byKey[k] = append(byKey[k], holder{canonical, u})
		}
	}
	return byKey
}

// keyOf is the skeleton of a canonical name. A name the policy refuses
// cannot have been granted by a correct server; it is grouped by itself.
func keyOf(canonical string) string {
	u, err := username.Normalize(canonical)
	if err != nil {
		return canonical
	}
	return u.Key
}

func describeDuplicate(hs []holder) string {
	slices.SortFunc(hs, func(a, b holder) int {
		return cmp.Or(cmp.Compare(a.canonical, b.canonical), slices.Compare(a.user[:], b.user[:]))
	})
	s := "granted twice:"
	for _, h := range hs {
		s += fmt.Sprintf(" %q to %s;", h.canonical, h.user)
	}
	return s[:len(s)-1]
}
