package stack_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims"
	"github.com/usernameregistry/registry/internal/app/stack/stacktest"
	"github.com/usernameregistry/registry/projector/upgrade"
)

// TestPolicyUpgradeThroughTheAPI: a registry started under username
// policy version 1 takes names through the HTTP API that version 2 puts
// under one key; while an upgrade is recorded as under way the API answers
// writes 503 policy_upgrading with Retry-After; after the upgrade the
// holders keep their names, the lookup says they are held under version 1
// in a grandfathered group, a third user's claim of either spelling is
// refused, and new claims are decided under version 2.
func TestPolicyUpgradeThroughTheAPI(t *testing.T) {
	t.Parallel()
	r := stacktest.Start(t, stacktest.Options{Projectors: 1, APIs: 1, Partitions: 4, PolicyVersion: 1})
	api := r.APIs[0]
	a, b, c, d, third := newID(), newID(), newID(), newID(), newID()
	want(t, "dog under version 1", post(t, api, newID(), a, "dog"), 201, "registered", "", "")
	want(t, "d0g under version 1", post(t, api, newID(), b, "d0g"), 201, "registered", "", "")
	want(t, "ΚΟΣΜΟΣ under version 1", post(t, api, newID(), c, "ΚΟΣΜΟΣ"), 201, "registered", "", "")
	want(t, "κοσμος under version 1", post(t, api, newID(), d, "κοσμος"), 201, "registered", "", "")
	ctx := context.Background()

	if _, err := r.Pool.Exec(ctx, `UPDATE username_policy SET upgrading_to = 2`); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // the API reads the state at most once a second
	got := post(t, api, newID(), third, "cat")
	want(t, "a claim while the upgrade is under way", got, 503, "error", "policy_upgrading", "")
	if got.RetryAfter == "" {
		t.Error("503 policy_upgrading without Retry-After")
	}
	if _, err := r.Pool.Exec(ctx, `UPDATE username_policy SET upgrading_to = NULL`); err != nil {
		t.Fatal(err)
	}

	prod, err := kgo.NewClient(append(r.Kafka, kgo.ProducerLinger(0))...)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if _, err := upgrade.Run(ctx, upgrade.Config{Pool: r.Pool, Producer: prod, Partitions: 4, To: 2, AdminKeys: r.AdminKeys(),
		Poll: 20 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	// The first write after the upgrade may still be built under version 1
	// and answered policy_upgrading (the node then reads the version again).
	claim := func(user, name string) reply {
		for range 5 {
			got := post(t, api, newID(), user, name)
			if got.Reason != "policy_upgrading" {
				return got
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("%s still answered policy_upgrading after the upgrade", name)
		return reply{}
	}
	want(t, "third user's dog", claim(third, "dog"), 409, "rejected", "taken", "dog")
	want(t, "third user's d0g", claim(third, "d0g"), 409, "rejected", "taken", "d0g")
	want(t, "third user's DOG", claim(third, "DOG"), 409, "rejected", "taken", "dog")
	want(t, "d0g's holder again", claim(b, "d0g"), 200, "registered", "", "")
	want(t, "a new name", claim(third, "cat"), 201, "registered", "", "")

	code, av := lookup(t, api, "d0g")
	if code != 200 || av.Status != "held" || av.HeldUnderPolicy != 1 || !av.Grandfathered || !slices.Equal(av.GrandfatheredWith, []string{"d0g", "dog"}) ||
		av.UserID != b || av.PolicyVersion != 2 {
		t.Errorf("lookup of d0g after the upgrade: %d %+v", code, av)
	}
	if code, av := lookup(t, api, "cat"); code != 200 || av.HeldUnderPolicy != 2 || av.Grandfathered {
		t.Errorf("lookup of a name won under version 2: %d %+v", code, av)
	}
	// Version 2 refuses ΚΟΣΜΟΣ as typed; its holder keeps it, a new claim
	// of it is refused, and its holder may still release it.
	want(t, "third user's ΚΟΣΜΟΣ", claim(third, "ΚΟΣΜΟΣ"), 422, "rejected", "invalid", "")
	got = do(t, "POST", api.URL+"/v1/releases?wait=30s", claimBody(newID(), third, "ΚΟΣΜΟΣ"))
	want(t, "another user's release of ΚΟΣΜΟΣ", got, 409, "rejected", "not_holder", "")
	got = do(t, "POST", api.URL+"/v1/releases?wait=30s", claimBody(newID(), c, "ΚΟΣΜΟΣ"))
	want(t, "the holder's release of ΚΟΣΜΟΣ", got, 200, "released", "", "")
	if code, av := lookup(t, api, "κοσμος"); code != 200 || av.UserID != d || av.Grandfathered || av.GrandfatheredWith != nil || av.HeldUnderPolicy != 1 {
		t.Errorf("lookup of κοσμος after its group's other member left: %d %+v", code, av)
	}
}

// TestUpgradeReachesAnIdleAPI: an API node that served no request while
// the upgrade ran looks names up, and claims them, under the new version
// once claims.PolicyRecheck has passed. (It once kept the version it had
// read at its first request for ever: after an upgrade its lookup called
// d0g, held in a grandfathered group, "available" under version 1.)
func TestUpgradeReachesAnIdleAPI(t *testing.T) {
	t.Parallel()
	r := stacktest.Start(t, stacktest.Options{Projectors: 1, APIs: 1, Partitions: 2, PolicyVersion: 1})
	api := r.APIs[0]
	want(t, "dog under version 1", post(t, api, newID(), newID(), "dog"), 201, "registered", "", "")
	want(t, "d0g under version 1", post(t, api, newID(), newID(), "d0g"), 201, "registered", "", "")
	if code, av := lookup(t, api, "d0g"); code != 200 || av.PolicyVersion != 1 {
		t.Fatalf("lookup of d0g before the upgrade: %d %+v", code, av)
	}
	prod, err := kgo.NewClient(append(r.Kafka, kgo.ProducerLinger(0))...)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if _, err := upgrade.Run(context.Background(), upgrade.Config{Pool: r.Pool, Producer: prod, Partitions: 2, To: 2, AdminKeys: r.AdminKeys(),
		Poll: 20 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(claims.PolicyRecheck + 100*time.Millisecond)
	if code, av := lookup(t, api, "d0g"); code != 200 || av.PolicyVersion != 2 || av.Status != "held" || !av.Grandfathered {
		t.Errorf("lookup of d0g after the upgrade: %d %+v; want held under version 2's lookup, grandfathered", code, av)
	}
	want(t, "a third user's d0g", post(t, api, newID(), newID(), "d0g"), 409, "rejected", "taken", "d0g")
}
