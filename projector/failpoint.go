package projector

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/usernameregistry/registry/events"
)

// Failpoints are deterministic fault points inside a round, for tests and
// the chaos harness. A projector calls its Config.Failpoint (when set) at
// each of them; nothing else can turn them on. The registry binary sets one
// from REGISTRY_FAILPOINTS (ParseFailpoints) only when it is built with the
// failpoints tag, as the chaos harness builds it; the shipped binary has no
// way to.
const (
	// FailBeforeBegin fires at the start of each try at a round, its
	// records in hand and no transaction open. A process
	// stopped there (action stop) holds a batch in flight and wakes up as a
	// zombie once the group has given its partitions to another member; the
	// fence must refuse its commit.
	FailBeforeBegin = "before-begin"
	// FailBeforeCommit fires after a batch's decisions are written in its
	// transaction and before COMMIT: a crash there must leave no trace.
	FailBeforeCommit = "before-commit"
	// FailAfterCommit fires after COMMIT and before publishing: the
	// decisions are durable but unpublished, so the outbox must deliver them.
	FailAfterCommit = "after-commit"
	// FailAfterPublish fires after Kafka acknowledged the decisions and
	// before their outbox rows are deleted: they are published again, as
	// identical copies.
	FailAfterPublish = "after-publish"
)

// ErrFailpoint is wrapped by the error a failpoint with action "error"
// returns. The projector treats it as any transient fault.
var ErrFailpoint = errors.New("failpoint")

// failpointRule fires action on the at-th hit of its failpoint.
type failpointRule struct {
	action string // "crash", "error" or "stop"
	at     int
	hits   int
}

// ParseFailpoints returns a Config.Failpoint hook from a spec such as
// "after-commit:crash@3,before-commit:error": a comma-separated list of
// name:action[@n]. The action fires on the n-th hit of the failpoint (the
// first when @n is left out) and only then. "crash" exits the process at
// once with status 137, as kill -9 would: no deferred cleanup, no
// graceful close. "error" makes the step fail as a lost connection would.
// "stop" stops the process where it is (it sends itself SIGSTOP, as a
// frozen VM or a long pause would stop it) until someone sends SIGCONT;
// then the step goes on as if nothing happened.
// An empty spec gives nil: no failpoints.
func ParseFailpoints(spec string) (func(name string) error, error) {
	return ParseFailpointsOf(spec, FailBeforeBegin, FailBeforeCommit, FailAfterCommit, FailAfterPublish)
}

// ParseFailpointsOf is ParseFailpoints for a tool with failpoints of its
// own, named in known (registry policy upgrade: upgrade.Failpoints). Only
// the projector's own names take a ".CommandType" suffix.
func ParseFailpointsOf(spec string, known ...string) (func(name string) error, error) {
	rules := map[string]*failpointRule{}
	for _, item := range strings.Split(spec, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		name, rule, err := parseFailpoint(item, known)
		if err != nil {
			return nil, err
		}
		rules[name] = rule
	}
	if len(rules) == 0 {
		return nil, nil
	}
	var mu sync.Mutex
	return func(name string) error {
		mu.Lock()
		rule := rules[name]
		fire := false
		if rule != nil {
			rule.hits++
			fire = rule.hits == rule.at
		}
		mu.Unlock()
		if !fire {
			return nil
		}
		switch rule.action {
		case "crash":
			fmt.Fprintf(os.Stderr, "projector: failpoint %s: crashing on hit %d\n", name, rule.at)
			os.Exit(137)
		case "stop":
			fmt.Fprintf(os.Stderr, "projector: failpoint %s: stopping on hit %d until SIGCONT\n", name, rule.at)
			if err := syscall.Kill(os.Getpid(), syscall.SIGSTOP); err != nil {
				return fmt.Errorf("%w %s (hit %d): stopping: %w", ErrFailpoint, name, rule.at, err)
			}
			return nil
		}
		return fmt.Errorf("%w %s (hit %d)", ErrFailpoint, name, rule.at)
	}, nil
}

func parseFailpoint(item string, known []string) (string, *failpointRule, error) {
	name, action, ok := strings.Cut(item, ":")
	if !ok {
		return "", nil, fmt.Errorf("failpoint %q: want name:action[@n]", item)
	}
	base, typ, typed := strings.Cut(name, ".")
	if typed && !slices.Contains(events.CommandTypes, typ) {
		return "", nil, fmt.Errorf("failpoint %q: unknown command type %q", item, typ)
	}
	if !slices.Contains(known, base) {
		return "", nil, fmt.Errorf("failpoint %q: unknown name %q (want one of %s)", item, name, strings.Join(known, ", "))
	}
	rule := &failpointRule{at: 1}
	if a, n, ok := strings.Cut(action, "@"); ok {
		at, err := strconv.Atoi(n)
		if err != nil || at < 1 {
			return "", nil, fmt.Errorf("failpoint %q: @%s is not a positive hit count", item, n)
		}
		action, rule.at = a, at
	}
	if action != "crash" && action != "error" && action != "stop" {
		return "", nil, fmt.Errorf("failpoint %q: unknown action %q (want crash, error or stop)", item, action)
	}
	rule.action = action
	return name, rule, nil
}

// failpointFor is failpoint(name), then, for each command type the round
// decides, the typed failpoint "name.Type" (say
// "after-commit.RenameTargetClaimed"): a rule for it counts only rounds
// that decide a record of that type, so a test can stop a rename at one
// of its steps.
func (p *Projector) failpointFor(name string, types []string) error {
	if err := p.failpoint(name); err != nil {
		return err
	}
	for _, typ := range types {
		if err := p.failpoint(name + "." + typ); err != nil {
			return err
		}
	}
	return nil
}

// failpoint is called at each named point; it returns the hook's error,
// or (nearly always) nothing.
func (p *Projector) failpoint(name string) error {
	if p.cfg.Failpoint == nil {
		return nil
	}
	return p.cfg.Failpoint(name)
}
