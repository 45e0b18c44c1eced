package events

import (
	"testing"
	"time"
)

func benchClaim() *ClaimSubmitted {
	return &ClaimSubmitted{
		RequestID: "0193a1b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b", UserID: "5f0c6d1e-2a3b-4c5d-8e9f-0a1b2c3d4e5f",
		Username: "Alice_Smith", Canonical: "alice_smith", Key: "alice_smith", PolicyVersion: 1,
		SubmittedAt: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC),
	}
}

func benchDecision() *Decision {
	at := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	return &Decision{
		RequestID: "0193a1b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b", UserID: "5f0c6d1e-2a3b-4c5d-8e9f-0a1b2c3d4e5f",
		Username: "Alice_Smith", Canonical: "alice_smith", Outcome: OutcomeRegistered,
		HolderRequestID: "0193a1b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b", RegisteredAt: &at,
		ClaimPartition: 3, ClaimOffset: 123456, PolicyVersion: 1,
	}
}

func BenchmarkClaimRecord(b *testing.B) {
	c := benchClaim()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ClaimRecord(c); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeClaim(b *testing.B) {
	rec, err := ClaimRecord(benchClaim())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeClaim(rec); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecisionValue(b *testing.B) {
	d := benchDecision()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecisionValue(d); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeDecision(b *testing.B) {
	d := benchDecision()
	v, err := DecisionValue(d)
	if err != nil {
		b.Fatal(err)
	}
	rec := DecisionRecord([]byte(d.Canonical), d.ClaimPartition, d.Type(), v)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeDecision(rec); err != nil {
			b.Fatal(err)
		}
	}
}
