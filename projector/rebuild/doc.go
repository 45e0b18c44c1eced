// Package rebuild derives the projection again from the topics, for the
// operator commands `registry rebuild` and `registry replay`:
//
//   - Build reads the registrations topic from offset 0 and folds every
//     decision into a shadow schema (ShadowSchema) built by the
//     projection's own migrations (projector/migrations), with the same
//     fold the projector uses (projector/internal/projection.Fold);
//   - Verify compares the shadow with the live projection;
//   - Swap moves the shadow in atomically, in one transaction that waits
//     for the projectors' batches in flight, catches the shadow up, and
//     fences every projector with the projector's own epoch bump
//     (projector/internal/fence);
//   - Replay decides every claim of the claims topic again with the
//     projector's decision rule and compares the result with the recorded
//     decisions, byte for byte: the determinism audit.
//
// docs/operations.md says how to run them; docs/design.md why they work.
package rebuild
