package projection

import (
	"fmt"
	"testing"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"
)

// benchRecords is a stream of claims like the load generator's: a fifth
// go to 100 hot names, a tenth repeat an earlier request.
func benchRecords(b *testing.B, n int) []*kgo.Record {
	recs := make([]*kgo.Record, 0, n)
	for i := range n {
		switch {
		case i%10 == 9 && i > 0:
			prev := recs[i-5]
			recs = append(recs, prev)
		case i%5 == 0:
			recs = append(recs, record(b, int64(i), uuid.NewString(), uuid.NewString(), fmt.Sprintf("hot-%d", i%100)))
		default:
			recs = append(recs, record(b, int64(i), uuid.NewString(), uuid.NewString(), fmt.Sprintf("user-%d", i)))
		}
	}
	return recs
}

// BenchmarkParseClaim: decoding a claims record and checking it against
// the policy (normalization, key, partition), per claim.
func BenchmarkParseClaim(b *testing.B) {
	recs := benchRecords(b, 1000)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		_ = Parse(recs[i%len(recs)], testRules)
		i++
	}
}

// BenchmarkDecide: the decision rule and the decision's encoding, per
// claim, against a state that grows to 10,000 claims and starts over.
func BenchmarkDecide(b *testing.B) {
	recs := benchRecords(b, 10000)
	ins := make([]Claim, len(recs))
	for i, r := range recs {
		ins[i] = Parse(r, testRules)
	}
	b.ReportAllocs()
	st, i := NewState(), 0
	for b.Loop() {
		if i == len(ins) {
			st, i = NewState(), 0
		}
		if _, err := Decide(st, &ins[i]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
