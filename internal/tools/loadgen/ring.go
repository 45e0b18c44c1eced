// Package loadgen holds what the load generators (registry-bench bench, the
// chaos harness, registry-bench generate) share: a ring of recent requests to
// repeat, and UUIDs drawn from a seeded generator, so a seed gives the
// same requests every time.
package loadgen

import (
	"encoding/binary"
	"math/rand/v2"

	"github.com/google/uuid"
)

// UUID returns a version 4 UUID drawn from rng.
func UUID(rng *rand.Rand) uuid.UUID {
	var u uuid.UUID
	binary.LittleEndian.PutUint64(u[:8], rng.Uint64())
	binary.LittleEndian.PutUint64(u[8:], rng.Uint64())
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

// Ring holds the last Max items added; older ones are overwritten.
type Ring[T any] struct {
	items []T
	next  int // where the next item goes once the ring is full
	max   int
}

// New returns an empty ring of at most size items (at least 1).
func New[T any](size int) *Ring[T] { return &Ring[T]{max: max(size, 1)} }

// Add keeps v, overwriting the oldest item when the ring is full.
func (r *Ring[T]) Add(v T) {
	if len(r.items) < r.max {
		r.items = append(r.items, v)
		return
	}
	r.items[r.next] = v
	r.next = (r.next + 1) % r.max
}

// Len is how many items the ring holds.
func (r *Ring[T]) Len() int { return len(r.items) }

// Pick returns one of the items, chosen by rng. The ring must not be empty.
func (r *Ring[T]) Pick(rng *rand.Rand) T { return r.items[rng.IntN(len(r.items))] }
