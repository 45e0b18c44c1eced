package events

import (
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The vectors are Kafka's own (UtilsTest.testMurmur2 in the Java client):
// the partition a non-Go producer computes must be the one we compute.
func TestPartitionMatchesJavaMurmur2(t *testing.T) {
	t.Parallel()
	cases := map[string]int32{
		"21":                         -973932308,
		"foobar":                     -790332482,
		"a-little-bit-long-string":   -985981536,
		"a-little-bit-longer-string": -1486304829,
		"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	}
	for key, javaHash := range cases {
		want := (javaHash & 0x7fffffff) % 12
		if got := Partition([]byte(key), 12); got != want {
			t.Errorf("Partition(%q, 12) = %d, want %d", key, got, want)
		}
	}
}

func TestClaimRoundTrip(t *testing.T) {
	t.Parallel()
	in := &ClaimSubmitted{
		RequestID: "6a2f3c4e-8a43-4a6c-9a57-0b6ef1f0e111", UserID: "0b0c2f55-4b5e-4c6b-8f53-f2bb4c1b2a10",
		Username: "Alice", Canonical: "alice", Key: "alice", PolicyVersion: 1,
		SubmittedAt: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC),
	}
	r, err := ClaimRecord(in)
	if err != nil {
		t.Fatal(err)
	}
	if r.Topic != TopicClaims || string(r.Key) != "alice" {
		t.Fatalf("record topic %q key %q", r.Topic, r.Key)
	}
	out, err := DecodeClaim(r)
	if err != nil {
		t.Fatal(err)
	}
	if *out != *in {
		t.Fatalf("round trip: got %+v, want %+v", out, in)
	}
}

func TestDecisionRoundTrip(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	in := &Decision{RequestID: "r1", UserID: "u1", Username: "Alice", Canonical: "alice",
		Outcome: OutcomeRegistered, HolderRequestID: "r1", RegisteredAt: &at, ClaimPartition: 3, ClaimOffset: 42, PolicyVersion: 1}
	body, err := DecisionValue(in)
	if err != nil {
		t.Fatal(err)
	}
	r := DecisionRecord([]byte("alice"), 3, in.Type(), body)
	if r.Partition != 3 || r.Topic != TopicRegistrations {
		t.Fatalf("record on %s/%d", r.Topic, r.Partition)
	}
	out, err := DecodeDecision(r)
	if err != nil {
		t.Fatal(err)
	}
	if out.RequestID != in.RequestID || out.Outcome != in.Outcome || !out.RegisteredAt.Equal(at) || out.ClaimOffset != 42 {
		t.Fatalf("round trip: got %+v", out)
	}
}

func TestDecodeRejectsForeignRecords(t *testing.T) {
	t.Parallel()
	hdr := func(typ, schema string) []kgo.RecordHeader {
		return []kgo.RecordHeader{{Key: HeaderType, Value: []byte(typ)}, {Key: HeaderSchema, Value: []byte(schema)}}
	}
	cases := map[string]*kgo.Record{
		"no headers":     {Value: []byte(`{}`)},
		"wrong type":     {Headers: hdr(TypeClaimRejected, "1"), Value: []byte(`{}`)},
		"newer schema":   {Headers: hdr(TypeClaimSubmitted, "2"), Value: []byte(`{}`)},
		"garbage schema": {Headers: hdr(TypeClaimSubmitted, "x"), Value: []byte(`{}`)},
		"not json":       {Headers: hdr(TypeClaimSubmitted, "1"), Value: []byte(`{"request_id":`)},
	}
	for name, r := range cases {
		if _, err := DecodeClaim(r); !errors.Is(err, ErrNotAnEvent) {
			t.Errorf("%s: DecodeClaim error = %v, want ErrNotAnEvent", name, err)
		}
	}
	bad := &kgo.Record{Headers: hdr(TypeClaimRejected, "1"), Value: []byte(`{"outcome":"rejected"}`)}
	if _, err := DecodeDecision(bad); !errors.Is(err, ErrNotAnEvent) {
		t.Errorf("decision without request_id: error = %v, want ErrNotAnEvent", err)
	}
}
