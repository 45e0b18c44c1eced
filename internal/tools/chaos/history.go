package chaos

import (
	"sync"
	"time"
)

// Results of an operation as the client saw it. ResultUnknown covers a
// timeout, a 202 pending, a 5xx and a broken connection: the claim may or
// may not have been written, and says nothing about the outcome.
const (
	ResultRegistered      = "registered"
	ResultTaken           = "taken"
	ResultConfusable      = "confusable"
	ResultReserved        = "reserved"
	ResultInvalid         = "invalid"
	ResultRequestConflict = "request_conflict"
	ResultUnknown         = "unknown"
)

// Kinds of operation the workload sends.
const (
	KindNew    = "new"    // a fresh request_id
	KindRetry  = "retry"  // an earlier request resent as is, to another API node
	KindReuse  = "reuse"  // an earlier request_id with another username or user
	KindPoison = "poison" // a bad record written straight to the claims topic
	// KindLifecycle is a command on the lifecycle names (Op.Command says
	// which): release, rename, reclaim, reserve, unreserve, transfer.
	KindLifecycle = "lifecycle"
)

// Op is one operation of the history.
type Op struct {
	ID     int       `json:"id"`
	Client int       `json:"client"`
	API    int       `json:"api"` // which API node answered; -1 for poison
	Kind   string    `json:"kind"`
	Invoke time.Time `json:"invoke"`
	// Wait is the ?wait the request asked for; the answer is due within
	// it plus the write bound (AnswerBound).
	Wait      time.Duration `json:"wait,omitempty"`
	Complete  time.Time     `json:"complete"`
	RequestID string        `json:"request_id"`
	UserID    string        `json:"user_id"`
	Username  string        `json:"username"`
	Result    string        `json:"result"`
	Code      int           `json:"code,omitempty"`      // HTTP status; 0 when there was no answer
	Canonical string        `json:"canonical,omitempty"` // from the answer
	Conflicts string        `json:"conflicts_with,omitempty"`
	Error     string        `json:"error,omitempty"`   // why the result is unknown
	Command   string        `json:"command,omitempty"` // KindLifecycle: which command
	To        string        `json:"to,omitempty"`      // a rename's to; a transfer's new user
}

// decisive reports whether the answer was a decision.
func (o *Op) decisive() bool {
	return o.Result != ResultUnknown && o.Kind != KindPoison && o.Kind != KindLifecycle
}

// History collects operations from concurrent clients.
type History struct {
	mu  sync.Mutex
	ops []Op
}

// Add records op, numbering it.
func (h *History) Add(op Op) {
	h.mu.Lock()
	defer h.mu.Unlock()
	op.ID = len(h.ops)
	h.ops = append(h.ops, op)
}

// Ops returns the operations recorded so far.
func (h *History) Ops() []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Op(nil), h.ops...)
}
