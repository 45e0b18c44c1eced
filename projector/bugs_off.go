//go:build !chaosbug

package projector

import "github.com/twmb/franz-go/pkg/kgo"

// The chaosbug build tag compiles deliberate bugs into the projector, so
// the chaos harness can show that its checker catches them (see
// bugs_on.go). In every other build these are identities the compiler
// inlines away.

// bugSQL returns the statement the projector runs for sql.
func bugSQL(sql string) string { return sql }

// resumeAt is where consumption of a newly assigned partition starts: the
// stored next offset, never Kafka's idea of it.
func resumeAt(next int64) kgo.Offset { return kgo.NewOffset().At(next).WithEpoch(-1) }
