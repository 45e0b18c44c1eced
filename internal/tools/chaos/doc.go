// Package chaos tries hard to break the registry's guarantees and checks
// that it could not.
//
// A run (Run) starts the registry as real processes on 127.0.0.1: a
// broker process (kfake persisted with fsync, see cmd/chaos), a private
// PostgreSQL cluster, projectors and API nodes built from cmd/registry. A
// TCP proxy sits between the projectors and the broker. Clients send
// claims over HTTP and record a history of every operation while an
// injector kills, pauses and restarts the parts. Then everything is healed
// and, once the claims are decided, the run collects the claims and
// registrations topics, the PostgreSQL tables, a projection rebuilt from
// registrations, and a reference Model replayed over the claims log, and
// hands them with the history to Check.
//
// Check is a pure function over that Input, tested with hand-made
// histories, so it can be trusted to fire: it counts one number per
// property in docs/guarantees.md, and each must be zero.
package chaos
