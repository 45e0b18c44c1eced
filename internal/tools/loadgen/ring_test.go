package loadgen

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func TestRingKeepsTheLastItems(t *testing.T) {
	r := New[int](3)
	for i := range 5 {
		r.Add(i)
	}
	if r.Len() != 3 {
		t.Fatalf("Len = %d, want 3", r.Len())
	}
	rng := rand.New(rand.NewPCG(1, 2))
	seen := map[int]bool{}
	for range 200 {
		seen[r.Pick(rng)] = true
	}
	got := make([]int, 0, len(seen))
	for v := range seen {
		got = append(got, v)
	}
	slices.Sort(got)
	if !slices.Equal(got, []int{2, 3, 4}) {
		t.Fatalf("picked %v, want the last three added: [2 3 4]", got)
	}
}
