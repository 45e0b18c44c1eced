// Package claims is where a username claim starts: the username policy
// (normalize, validate, key), building and publishing ClaimSubmitted
// events, the Go client a signup service embeds to claim a name and await
// its decision, and the HTTP API built on that client.
//
// A claim is decided elsewhere, by the single writer of its partition (see
// package projector). The client only ever reports a decision it read from
// the registrations topic or the request ledger; when none arrives in time
// the claim is pending, never guessed.
package claims
