package bench

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"

	"github.com/google/uuid"

	"github.com/usernameregistry/registry/internal/tools/loadgen"
)

// claim is one request the load generator sends.
type claim struct {
	RequestID uuid.UUID `json:"request_id"`
	UserID    uuid.UUID `json:"user_id"`
	Username  string    `json:"username"`
}

// recentClaims is how many earlier claims a retry may repeat. Recent ones
// are often still in flight, so some retries race their original, which is
// exactly what a client that gives up and retries does.
const recentClaims = 1024

// workload generates claims from a seed: the same seed gives the same
// sequence of claims (which client sends which one depends on timing).
// Names carry a tag derived from the seed, so runs with different seeds
// against one server do not collide with each other's names.
type workload struct {
	hot   float64 // share of new claims that go to a hot name
	retry float64 // share of claims that repeat a recent one

	mu     sync.Mutex
	rng    *rand.Rand
	hotSet []string // hot names, lower case, each with an 'o' after the 'h'
	tag    string
	seq    uint64               // unique names handed out so far
	recent *loadgen.Ring[claim] // recent claims, for retries
}

func newWorkload(seed uint64, hot, retry float64, hotNames int) *workload {
	w := &workload{hot: hot, retry: retry, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), recent: loadgen.New[claim](recentClaims)}
	w.tag = strconv.FormatUint(seed, 36)
	for i := range hotNames {
		w.hotSet = append(w.hotSet, "hot"+w.tag+"-"+strconv.Itoa(i))
	}
	return w
}

// next returns the next claim to send.
func (w *workload) next() claim {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.recent.Len() > 0 && w.rng.Float64() < w.retry {
		return w.recent.Pick(w.rng)
	}
	c := claim{RequestID: w.uuid(), UserID: w.uuid(), Username: w.name()}
	w.remember(c)
	return c
}

func (w *workload) remember(c claim) { w.recent.Add(c) }

// name picks a hot name or the next unique one. Unique names end in a
// decimal counter after a fixed prefix; digits have distinct skeletons, so
// no two unique names of a run are look-alikes of each other.
func (w *workload) name() string {
	if len(w.hotSet) == 0 || w.rng.Float64() >= w.hot {
		w.seq++
		return "u" + w.tag + "-" + strconv.FormatUint(w.seq, 10)
	}
	return w.spell(w.hotSet[w.rng.IntN(len(w.hotSet))])
}

// spell types a hot name the way different people might: mostly as is,
// sometimes capitalised (same canonical name, so "taken"), sometimes with
// a digit 0 for the letter o (same key, another canonical name, so
// "confusable"; policy version 2 refuses a Cyrillic о in a Latin name
// outright). Both verdicts then show up under load.
func (w *workload) spell(name string) string {
	switch r := w.rng.IntN(10); {
	case r == 0:
		return "H" + name[1:]
	case r == 1:
		return strings.Replace(name, "o", "0", 1)
	default:
		return name
	}
}

// uuid returns a version 4 UUID drawn from the seeded generator.
func (w *workload) uuid() uuid.UUID {
	return loadgen.UUID(w.rng)
}
