package fence

import (
	"context"
	"slices"
	"testing"

	"github.com/usernameregistry/registry/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestBump: the first bump creates epoch 1 at offset 0; an assignment's
// bump keeps the stored offset and adds one to the epoch; a swap's bump
// moves the offset and adds one to the epoch.
func TestBump(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	ctx := context.Background()
	bump := func(parts []int32, next []int64) []Position {
		t.Helper()
		ps, err := Bump(ctx, pool, parts, next)
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(ps, func(a, b Position) int { return int(a.Partition - b.Partition) })
		return ps
	}
	if got, want := bump([]int32{0, 1}, nil), []Position{{0, 0, 1}, {1, 0, 1}}; !slices.Equal(got, want) {
		t.Fatalf("first assignment: %v, want %v", got, want)
	}
	if _, err := pool.Exec(ctx, `UPDATE claim_partitions SET next_offset = 7 WHERE partition = 0`); err != nil {
		t.Fatal(err)
	}
	if got, want := bump([]int32{0}, nil), []Position{{0, 7, 2}}; !slices.Equal(got, want) {
		t.Errorf("reassignment: %v, want %v", got, want)
	}
	if got, want := bump([]int32{0, 1, 2}, []int64{5, 9, 3}), []Position{{0, 5, 3}, {1, 9, 2}, {2, 3, 1}}; !slices.Equal(got, want) {
		t.Errorf("swap: %v, want %v", got, want)
	}
	if _, err := Bump(ctx, pool, []int32{0, 1}, []int64{1}); err == nil {
		t.Error("offsets not matching partitions: no error")
	}
}
