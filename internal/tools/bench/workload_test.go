package bench

import (
	"testing"

	"github.com/usernameregistry/registry/claims/username"
)

// TestWorkloadNames checks the names the generator sends: all valid, the
// unique ones pairwise distinct even by skeleton (else "unique" claims
// would collide as look-alikes), and every spelling of a hot name sharing
// that name's skeleton, so hot claims do collide.
func TestWorkloadNames(t *testing.T) {
	t.Parallel()
	w := newWorkload(0xdeadbeef, 0.5, 0, 10)
	keys := map[string]string{}
	hotKeys := map[string]bool{}
	for _, h := range w.hotSet {
		hotKeys[mustKey(t, h)] = true
	}
	for range 5000 {
		c := w.next()
		k := mustKey(t, c.Username)
		if c.Username[0] == 'u' {
			if prev, dup := keys[k]; dup {
				t.Fatalf("unique names %q and %q share the skeleton %q", prev, c.Username, k)
			}
			keys[k] = c.Username
		} else if !hotKeys[k] {
			t.Fatalf("hot spelling %q has skeleton %q, not a hot name's", c.Username, k)
		}
	}
	if len(keys) < 2000 || len(keys) > 3000 {
		t.Errorf("%d unique names in 5000 claims with hot share 0.5", len(keys))
	}
}

func mustKey(t *testing.T, name string) string {
	t.Helper()
	u, err := username.Normalize(name)
	if err != nil {
		t.Fatalf("generated name %q breaks the policy: %v", name, err)
	}
	return u.Key
}

func TestWorkloadIsRepeatableAndRetries(t *testing.T) {
	t.Parallel()
	a, b := newWorkload(42, 0.2, 0.3, 5), newWorkload(42, 0.2, 0.3, 5)
	seen := map[claim]int{}
	for i := range 2000 {
		ca, cb := a.next(), b.next()
		if ca != cb {
			t.Fatalf("claim %d differs between two workloads with one seed: %+v, %+v", i, ca, cb)
		}
		seen[ca]++
	}
	repeats := 0
	for _, n := range seen {
		repeats += n - 1
	}
	if repeats < 400 || repeats > 800 {
		t.Errorf("%d repeated claims in 2000 with retry share 0.3", repeats)
	}
}
