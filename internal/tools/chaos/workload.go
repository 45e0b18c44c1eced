package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/tools/loadgen"
)

// Shares of the workload's operations.
const (
	shareRetry  = 0.15 // an earlier request again, to another API node
	shareReuse  = 0.02 // an earlier request_id with another payload
	sharePoison = 0.01 // a bad record straight to the claims topic
	shareLife   = 0.15 // a command on the lifecycle names (lifecycle.go)
	shareHot    = 0.75 // of new claims: a hot name
	hotNames    = 24
	recentOps   = 256
)

// workload draws operations from a seeded generator: the same seed gives
// the same sequence of draws (which client sends which depends on timing).
type workload struct {
	mu     sync.Mutex
	rng    *rand.Rand
	tag    string
	hot    []string
	seq    int
	recent *loadgen.Ring[Op] // recent operations, for retries and reuses
	life   lifeNames         // the lifecycle names and users
}

// newWorkload returns the workload of seed; with upgrade (chaos
// --upgrade) its lifecycle names include one that version 2 refuses and
// carries with a shadow (newLifeNames).
func newWorkload(seed uint64, upgrade bool) *workload {
	w := &workload{rng: rand.New(rand.NewPCG(seed, seed^0x5deece66d)), tag: strconv.FormatUint(seed%46656, 36), recent: loadgen.New[Op](recentOps)}
	for i := range hotNames {
		w.hot = append(w.hot, "hot"+w.tag+"-"+strconv.Itoa(i))
	}
	w.life = newLifeNames(w, upgrade)
	return w
}

// next returns the next operation to send; API is a suggestion the
// client overrides for new claims.
func (w *workload) next() Op {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.rng.Float64()
	switch {
	case r < sharePoison:
		return Op{Kind: KindPoison, API: -1}
	case r > 1-shareLife:
		return w.lifecycle()
	case r < sharePoison+shareRetry && w.recent.Len() > 0:
		op := w.recent.Pick(w.rng)
		return Op{Kind: KindRetry, RequestID: op.RequestID, UserID: op.UserID, Username: op.Username, API: op.API + 1}
	case r < sharePoison+shareRetry+shareReuse && w.recent.Len() > 0:
		op := w.recent.Pick(w.rng)
		reuse := Op{Kind: KindReuse, RequestID: op.RequestID, UserID: op.UserID, Username: w.name(), API: op.API + 1}
		if w.rng.IntN(3) == 0 {
			reuse.Username, reuse.UserID = op.Username, w.uuid()
		}
		w.remember(reuse)
		return reuse
	}
	op := Op{Kind: KindNew, RequestID: w.uuid(), UserID: w.uuid(), Username: w.name(), API: w.rng.IntN(1 << 16)}
	w.remember(op)
	return op
}

func (w *workload) remember(op Op) { w.recent.Add(op) }

// name is a hot name, spelt as different people would (capitalised:
// taken; a 0 for an o: confusable; a Cyrillic о: invalid, a mixed-script
// lookalike), a reserved one now and then, a name of the kinds of issue 11
// now and then, or a unique one.
func (w *workload) name() string {
	if w.rng.Float64() >= shareHot {
		w.seq++
		return "u" + w.tag + "-" + strconv.Itoa(w.seq)
	}
	n := w.hot[w.rng.IntN(len(w.hot))]
	switch w.rng.IntN(20) {
	case 0, 1:
		return "H" + n[1:]
	case 2:
		return strings.Replace(n, "o", "\u043e", 1)
	case 3:
		return strings.Replace(n, "o", "0", 1)
	case 4:
		return "admin"
	case 5:
		return lookalikes[w.rng.IntN(len(lookalikes))]
	}
	return n
}

// lookalikes are names of the kinds in issue 11's table (docs/usernames.md,
// "Attacks version 2 stops"): pairs whose second spelling must be refused
// or lose to the first, names that break paths, and one name in its
// composed and decomposed forms, which must get the same answers.
var lookalikes = []string{
	"lumen11", "Iumen11", "pilot7", "P\u0130LOT7", "zo\u00e9", "zoe\u0301\u0301", "dog", "d0g",
	"\u0430cmecorp", "acmecorp", strings.Repeat("\uac01", 29), strings.Repeat("\u1100\u1161\u11a8", 29),
	"..", ".well-known", "a/b", "robots.txt", "jos\u00e9_", "orchid5", "orch\u0456d5", "\u0441\u043e\u0440", "cop",
}

func (w *workload) uuid() string {
	return loadgen.UUID(w.rng).String()
}

func (w *workload) intn(n int) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rng.IntN(n)
}

// answer is the part of an API answer the history keeps.
type answer struct {
	Status        string `json:"status"`
	Reason        string `json:"reason"`
	Canonical     string `json:"canonical"`
	ConflictsWith string `json:"conflicts_with"`
}

// send posts op to url and fills in its result.
func send(ctx context.Context, client *http.Client, url, token string, op *Op, wait time.Duration) {
	body, _ := json.Marshal(map[string]string{"request_id": op.RequestID, "user_id": op.UserID, "username": op.Username})
	op.Invoke, op.Wait = time.Now(), wait
	defer func() { op.Complete = time.Now() }()
	op.Result = ResultUnknown
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/claims?wait="+wait.String(), bytes.NewReader(body))
	if err != nil {
		op.Error = err.Error()
		return
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		op.Error = err.Error()
		return
	}
	defer resp.Body.Close()
	op.Code = resp.StatusCode
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var a answer
	if err != nil || json.Unmarshal(raw, &a) != nil {
		op.Error = fmt.Sprintf("answer %d unreadable: %v %q", resp.StatusCode, err, raw)
		return
	}
	op.Canonical, op.Conflicts = a.Canonical, a.ConflictsWith
	switch {
	case (resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusCreated) && a.Status == events.OutcomeRegistered:
		op.Result = ResultRegistered
	case (resp.StatusCode == http.StatusConflict || resp.StatusCode == http.StatusUnprocessableEntity) && a.Status == events.OutcomeRejected && a.Reason != "":
		op.Result = a.Reason
	default:
		op.Error = fmt.Sprintf("answer %d %s %s", resp.StatusCode, a.Status, a.Reason)
	}
}

// retryable records a poison claim whose payload is valid (it was only
// written to the wrong partition) as a request a client may retry through
// the API, which writes it to the right partition: its request_id then
// has decisions in two partitions (docs/design.md).
func (w *workload) retryable(op Op) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.remember(op)
}

// wrongPartition is the poison kind whose claim is valid but written to
// the wrong partition.
const wrongPartition = 2

// poison builds a bad claims record of kind n (mod 6), each a way a
// foreign producer can get the wire contract wrong.
func poison(n int, partitions int, w *workload) *kgo.Record {
	id, user := w.uuid(), w.uuid()
	name := "p" + w.tag + "-" + strconv.Itoa(n)
	good := &events.ClaimSubmitted{RequestID: id, UserID: user, Username: name, Canonical: name, Key: name, PolicyVersion: username.Latest}
	part := events.Partition([]byte(name), partitions)
	rec := func(c *events.ClaimSubmitted, p int32) *kgo.Record {
		r, _ := events.ClaimRecord(c)
		r.Partition = p
		return r
	}
	switch n % 6 {
	case 0:
		return &kgo.Record{Topic: events.TopicClaims, Partition: part, Key: []byte(name), Value: []byte("not json {")}
	case 1:
		c := *good
		c.RequestID = "not-a-uuid"
		return rec(&c, part)
	case wrongPartition:
		return rec(good, (part+1)%int32(partitions)) // murmur2 not used
	case 3:
		c := *good
		c.Canonical = strings.ToUpper(name)
		return rec(&c, part)
	case 4:
		c := *good
		c.PolicyVersion = username.Latest + 1
		return rec(&c, part)
	default:
		c := *good
		c.Username = "bad name"
		return rec(&c, part)
	}
}
