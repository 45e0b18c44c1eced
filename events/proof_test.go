package events_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
)

const keyA = "0102030405060708091011121314151617181920212223242526272829303132"
const keyB = "a1a2a3a4a5a6a7a8a9b0b1b2b3b4b5b6b7b8b9c0c1c2c3c4c5c6c7c8c9d0d1d2"

func keys(t *testing.T, file string) *events.AdminKeys {
	t.Helper()
	k, err := events.ParseAdminKeys(strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func adminRecord() *kgo.Record {
	return &kgo.Record{Topic: events.TopicClaims, Key: []byte("alice"), Value: []byte(`{"request_id":"x","caller":"ops"}`),
		Headers: []kgo.RecordHeader{{Key: events.HeaderType, Value: []byte("AdminReserve")}}}
}

func TestAdminProof(t *testing.T) {
	t.Parallel()
	signer := keys(t, "# current first\nk2 "+keyB+"\nk1 "+keyA+"\n")
	rec := adminRecord()
	signer.Sign(rec)
	if err := signer.Verify(rec); err != nil {
		t.Fatalf("own signature: %v", err)
	}
	if err := keys(t, "k2 "+keyB).Verify(rec); err != nil {
		t.Errorf("a projector holding the signing key: %v", err)
	}
	// Signed with k1 before a rotation: still verifies while k1 is listed.
	old := adminRecord()
	keys(t, "k1 "+keyA).Sign(old)
	if err := signer.Verify(old); err != nil {
		t.Errorf("a command signed by the older key: %v", err)
	}

	forged := []struct {
		name   string
		mutate func(r *kgo.Record)
		want   error
	}{
		{"no proof", func(r *kgo.Record) { r.Headers = r.Headers[:1] }, events.ErrNoProof},
		{"two proofs", func(r *kgo.Record) { r.Headers = append(r.Headers, r.Headers[1]) }, events.ErrNoProof},
		{"value changed", func(r *kgo.Record) { r.Value = []byte(`{"request_id":"x","caller":"me"}`) }, events.ErrBadProof},
		{"key changed", func(r *kgo.Record) { r.Key = []byte("bob") }, events.ErrBadProof},
		{"type changed", func(r *kgo.Record) { r.Headers[0].Value = []byte("AdminTransfer") }, events.ErrBadProof},
		{"unknown key id", func(r *kgo.Record) { r.Headers[1].Value = []byte("k9" + string(r.Headers[1].Value[2:])) }, events.ErrBadProof},
		{"not hex", func(r *kgo.Record) { r.Headers[1].Value = []byte("k2:zz") }, events.ErrBadProof},
		{"no key id", func(r *kgo.Record) { r.Headers[1].Value = r.Headers[1].Value[3:] }, events.ErrBadProof},
	}
	for _, f := range forged {
		r := adminRecord()
		signer.Sign(r)
		f.mutate(r)
		if err := signer.Verify(r); !errors.Is(err, f.want) {
			t.Errorf("%s: %v, want %v", f.name, err, f.want)
		}
	}
	// Signed under a key the verifier does not hold, with a known id.
	r := adminRecord()
	keys(t, "k2 "+keyA).Sign(r)
	if err := signer.Verify(r); !errors.Is(err, events.ErrBadProof) {
		t.Errorf("signed by another secret under a known id: %v", err)
	}
	// Re-signing replaces the proof instead of adding one.
	signer.Sign(r)
	if err := signer.Verify(r); err != nil {
		t.Errorf("re-signed: %v", err)
	}
}

func TestParseAdminKeys(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ file, want string }{
		{"", "holds no key"},
		{"k1", "line 1: want KEYID HEX"},
		{"k1 " + keyA[:62], "line 1: the key must be at least 64 hex digits"},
		{"k1 " + keyA + "\nk1 " + keyB, "line 2: key id k1 is listed twice"},
		{"k/1 " + keyA, "line 1: want KEYID HEX"},
	} {
		_, err := events.ParseAdminKeys(strings.NewReader(c.file))
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), keyA[:20]) {
			t.Errorf("%q: %v, want an error containing %q and no key", c.file, err, c.want)
		}
	}
}
