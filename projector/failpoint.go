package projector

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/usernameregistry/registry/events"
)

// Failpoints are deterministic fault points inside a batch, for tests and
// the chaos harness. They are off unless SetFailpoints enabled them (the
// registry binary does so from REGISTRY_FAILPOINTS) or a test set a hook;
// an unset failpoint costs one mutex per batch.
const (
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
	action string // "crash" or "error"
	at     int
	hits   int
}

var failpoints struct {
	mu    sync.Mutex
	rules map[string]*failpointRule
	// hook, when set, runs on every hit before the rules; a non-nil
	// error is returned from the failpoint (SetFailpointHook).
	hook func(name string) error
}

// SetFailpoints enables failpoints from a spec such as
// "after-commit:crash@3,before-commit:error": a comma-separated list of
// name:action[@n]. The action fires on the n-th hit of the failpoint (the
// first when @n is left out) and only then. "crash" exits the process at
// once with status 137, as kill -9 would: no deferred cleanup, no
// graceful close. "error" makes the step fail as a lost connection would.
// An empty spec disables every failpoint.
func SetFailpoints(spec string) error {
	rules := map[string]*failpointRule{}
	for _, item := range strings.Split(spec, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		name, rule, err := parseFailpoint(item)
		if err != nil {
			return err
		}
		rules[name] = rule
	}
	failpoints.mu.Lock()
	defer failpoints.mu.Unlock()
	failpoints.rules = rules
	return nil
}

func parseFailpoint(item string) (string, *failpointRule, error) {
	name, action, ok := strings.Cut(item, ":")
	if !ok {
		return "", nil, fmt.Errorf("failpoint %q: want name:action[@n]", item)
	}
	base, typ, typed := strings.Cut(name, ".")
	if typed && !slices.Contains(events.CommandTypes, typ) {
		return "", nil, fmt.Errorf("failpoint %q: unknown command type %q", item, typ)
	}
	switch base {
	case FailBeforeCommit, FailAfterCommit, FailAfterPublish:
	default:
		return "", nil, fmt.Errorf("failpoint %q: unknown name %q (want %s, %s or %s)", item, name, FailBeforeCommit, FailAfterCommit, FailAfterPublish)
	}
	rule := &failpointRule{at: 1}
	if a, n, ok := strings.Cut(action, "@"); ok {
		at, err := strconv.Atoi(n)
		if err != nil || at < 1 {
			return "", nil, fmt.Errorf("failpoint %q: @%s is not a positive hit count", item, n)
		}
		action, rule.at = a, at
	}
	if action != "crash" && action != "error" {
		return "", nil, fmt.Errorf("failpoint %q: unknown action %q (want crash or error)", item, action)
	}
	rule.action = action
	return name, rule, nil
}

// SetFailpointHook makes every failpoint call hook first, for in-process
// tests: the hook can act at that exact point (cut the database
// connection under a transaction about to commit, say) and, by returning
// an error, fail the step. nil removes it.
func SetFailpointHook(hook func(name string) error) {
	failpoints.mu.Lock()
	defer failpoints.mu.Unlock()
	failpoints.hook = hook
}

// failpointFor is failpoint(name), then, for each command type the
// round decides, the typed failpoint "name.Type" (say
// "after-commit.RenameTargetClaimed"): its hits count only rounds that
// decide a record of that type, so a test can stop a rename at one step.
// Typed failpoints have rules only; the hook sees the plain name.
func failpointFor(name string, types []string) error {
	if err := failpoint(name); err != nil {
		return err
	}
	for _, typ := range types {
		if err := hit(name+"."+typ, false); err != nil {
			return err
		}
	}
	return nil
}

// failpoint is called at each named point; it returns an error, exits the
// process, or (nearly always) does nothing.
func failpoint(name string) error { return hit(name, true) }

// hit counts a hit of failpoint name and acts on it; the hook runs only
// withHook.
func hit(name string, withHook bool) error {
	failpoints.mu.Lock()
	hook, rule := failpoints.hook, failpoints.rules[name]
	if !withHook {
		hook = nil
	}
	fire := false
	if rule != nil {
		rule.hits++
		fire = rule.hits == rule.at
	}
	failpoints.mu.Unlock()
	if hook != nil {
		if err := hook(name); err != nil {
			return err
		}
	}
	if !fire {
		return nil
	}
	if rule.action == "crash" {
		fmt.Fprintf(os.Stderr, "projector: failpoint %s: crashing on hit %d\n", name, rule.at)
		os.Exit(137)
	}
	return fmt.Errorf("%w %s (hit %d)", ErrFailpoint, name, rule.at)
}
