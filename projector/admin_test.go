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
