// Package projector is the single writer of each claims partition. A
// Projector is one member of a consumer group over the claims topic; for
// every partition the group gives it, it decides claims strictly in log
// order, commits the decisions with the projection in PostgreSQL, and
// publishes them to the registrations topic.
//
// # One transaction per batch
//
// Everything one poll returned, for every partition this member owns, is
// decided and written in one PostgreSQL transaction (a round):
//
//   - a compare-and-set on each partition's claim_partitions row, which
//     advances next_offset only while this member's owner_epoch is
//     current (the zombie fence, below); a partition that fails it is
//     fenced and left out of the round;
//   - the request ledger (requests): the first decision for each
//     request_id in the partition, the bytes that are published;
//   - the usernames projection, with UNIQUE constraints on canonical and
//     key as the backstop behind the single-writer rule;
//   - the outbox: every decision of the round, to publish after commit,
//     and the deletion of the rows earlier rounds published.
//
// Reads and writes go as arrays in pgx batches, never a query per claim.
//
// # Fencing, walked through
//
// The group protocol hands a partition to one member, but a member that
// stalls (a long pause, a partition from the broker) can lose its
// partitions without knowing and wake up holding a batch. PostgreSQL
// decides who may write:
//
//  1. Member A is assigned partition 3. Before fetching, it increments
//     owner_epoch (say to 7) and reads next_offset (say 100). Kafka is told
//     to start there; Kafka's own group offsets are only for lag graphs.
//  2. A fetches 100..149 and begins a transaction whose first statement is
//     UPDATE ... SET next_offset = 150 WHERE partition = 3 AND
//     owner_epoch = 7 AND next_offset = 100. The row is now locked by A.
//  3. A stalls here. The group moves partition 3 to member B, whose epoch
//     bump (to 8) blocks on A's row lock.
//  4. Either A's transaction commits first (B then reads next_offset 150
//     and starts after A's batch), or it fails (B reads 100 and decides the
//     same claims, with the same result, since decisions are a function of
//     the log). Nothing is decided twice differently and nothing skipped.
//  5. When A wakes for its next batch, its compare-and-set names epoch 7,
//     matches no row, and A stops writing partition 3: ErrFenced.
//
// # Rejoining
//
// A member whose batch is fenced stops writing that partition at once, then,
// once the batches of the same poll are finished, closes its group client
// (leaving the group) and joins again with a new one. Whatever the group
// then assigns it goes through the same epoch bump and resumes at the
// stored next_offset. For a zombie this is harmless: the group decides what
// it gets, and each assignment fences the previous owner. It is also how
// running projectors follow a rebuild's swap, which bumps every partition's
// epoch in the transaction that installs the rebuilt tables: each projector
// is fenced on its next batch and resumes from the rebuilt offsets, with
// no restart and nothing skipped. The client that publishes decisions is
// not a group member and stays up across rejoins.
//
// # Publishing
//
// After commit the round's outbox rows are produced to registrations (to
// the claim's partition number); once Kafka acknowledged them, the next
// round's transaction deletes them (or the projector does, after a second
// without a round).
// A crash in between leaves them in the outbox; the next owner publishes
// them when it is assigned the partition. Copies are byte-identical, so
// consumers dedupe by (request_id, claim_partition, claim_offset).
//
// # Faults
//
// A failed batch (database or broker unreachable) is retried with backoff,
// never skipped and never decided on partial information: the retry first
// re-reads the partition's stored position, because the failed commit may
// or may not have happened. A stored offset beyond the log end means the
// broker lost decided claims; the projector halts with
// ErrOffsetBeyondLogEnd rather than skip or re-decide.
package projector
