// Package registrations reads decisions from the registrations topic. Its
// Reader hands each decision to the requests waiting on its request_id,
// which is how an API instance answers a claim that another process
// decided. Tail reads decisions for monitoring (`registry rejections`),
// from now, from a time, or from the beginning.
//
// Decisions may arrive more than once (the projector publishes at least
// once, and a retried request_id is answered again); every copy of a
// request_id's decision is identical, so a waiter simply takes the first
// one that matches its payload.
package registrations
