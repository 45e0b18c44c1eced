package projector

import (
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
)

func TestCheckAdminProof(t *testing.T) {
	t.Parallel()
	keys, err := events.ParseAdminKeys(strings.NewReader("k1 " + strings.Repeat("ab", 32)))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := events.ParseAdminKeys(strings.NewReader("k1 " + strings.Repeat("cd", 32)))
	rec := func() *kgo.Record {
		return &kgo.Record{Topic: events.TopicClaims, Key: []byte("alice"), Value: []byte(`{"request_id":"r"}`),
			Headers: []kgo.RecordHeader{{Key: events.HeaderType, Value: []byte("AdminReserve")}}}
	}
	signed := rec()
	keys.Sign(signed)
	if why := checkAdminProof(keys, signed); why != "" {
		t.Errorf("signed command refused: %s", why)
	}
	forged := rec()
	other.Sign(forged)
	for name, c := range map[string]struct {
		keys *events.AdminKeys
		rec  *kgo.Record
	}{"unsigned": {keys, rec()}, "forged": {keys, forged}, "no keys": {nil, signed}} {
		why := checkAdminProof(c.keys, c.rec)
		if !strings.HasPrefix(why, "administrative command refused") {
			t.Errorf("%s: %q, want a refusal", name, why)
		}
		// The verdict depends only on the record and the keys: a replay agrees.
		if again := checkAdminProof(c.keys, c.rec); again != why {
			t.Errorf("%s: %q then %q", name, why, again)
		}
	}
}

// TestDecisionNamesCaller: a decision carries its claim's caller, and a
// claim written before callers existed (no "caller" field) is decided
// exactly as before, its decision without one.
func TestDecisionNamesCaller(t *testing.T) {
	t.Parallel()
	const user = "7d3f2b0e-5a61-4c1e-9f5b-2b8c1d4e6a01"
	withCaller := func(rec *kgo.Record, caller string) *kgo.Record {
		c, err := events.DecodeClaim(rec)
		if err != nil {
			t.Fatal(err)
		}
		c.Caller = caller
		out, err := events.ClaimRecord(c)
		if err != nil {
			t.Fatal(err)
		}
		out.Partition, out.Offset, out.Timestamp = rec.Partition, rec.Offset, rec.Timestamp
		return out
	}
	old := record(t, 0, "0b6f2a51-8c3e-4d7a-9e21-5f4c3b2a1d01", user, "callerless")
	if strings.Contains(string(old.Value), `"caller"`) {
		t.Fatalf("a claim without a caller encodes one: %s", old.Value)
	}
	signup := withCaller(record(t, 1, "0b6f2a51-8c3e-4d7a-9e21-5f4c3b2a1d02", "c4a8e913-2f7d-4b6a-8e15-93d0f2a7b502", "callerless"), "signup")
	ds := decideAll(t, newState(), old, signup)
	if ds[0].Caller != "" || ds[1].Caller != "signup" || ds[1].Reason != events.ReasonTaken {
		t.Fatalf("decisions %+v %+v", ds[0], ds[1])
	}
	v, _ := events.DecisionValue(ds[0])
	if strings.Contains(string(v), `"caller"`) {
		t.Errorf("an old claim's decision gained a caller field: %s", v)
	}
}
