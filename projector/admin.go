package projector

import (
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/projector/internal/projection"
)

// checkAdminProof is the decider's gate for administrative commands
// (reserve, unreserve, transfer): anything that can write to the claims
// topic can write one, so one is obeyed only when its events.HeaderProof
// verifies under the projectors' AdminKeys, an HMAC only API nodes (which
// checked the caller's admin scope) can make. It returns why the command
// must be decided invalid, or "" when the proof holds.
//
// It depends only on the record and the keys, so the live projector and
// the replay audit decide alike. Decide a command with a non-empty answer
// as events.ReasonInvalid with the answer as detail, like any other
// invalid command: it never blocks the partition and is never obeyed.
//
// The administrative commands themselves come with their own event types;
// their parser calls this before anything else.
func checkAdminProof(keys *events.AdminKeys, r *kgo.Record) string {
	return projection.AdminProblem(keys, r)
}
