// Package projection is how the projection follows from the log, in one
// place for the projector and for rebuild and replay (projector/rebuild),
// and visible to nobody else:
//
//   - Parse reads a claims record and checks it against the pinned
//     username policy;
//   - Decide is the decision rule: the decision for a claim, given the
//     state its partition's earlier decisions built;
//   - Fold is what a decision does to the projection (a ledger row, a new
//     holder). The projector folds the decisions it makes inside its
//     transaction; rebuild folds the decisions it reads from the
//     registrations topic; both write the Change's rows. A partition's
//     state is thus a pure function of its decisions.
//   - Redecider decides a partition again in memory, for the replay audit
//     and the generator.
//
// The chaos harness keeps its own, independent model of the rules on
// purpose (internal/tools/chaos): it checks this code rather than reusing it.
package projection
