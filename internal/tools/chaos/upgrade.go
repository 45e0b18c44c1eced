package chaos

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/usernameregistry/registry/events"
)

// FaultKillUpgrade is the fault the upgrade mode adds: the first run of
// "registry policy upgrade" is killed (SIGKILL) at a seeded moment, so the
// next attempt has to resume it.
const FaultKillUpgrade = "kill-upgrade"

// UpgradeRun is what the policy upgrade of an upgrade run did.
type UpgradeRun struct {
	Started, Ended time.Time // the first attempt's start; the successful attempt's end (zero if none)
	Attempts       int
	Failures       []string // why each failed attempt ended
	// Waits is, per claims partition, how long it decided nothing new:
	// from its frozen decision to its activated decision, by the
	// registrations records' timestamps.
	Waits map[int32]time.Duration
	// Retried counts the workload's answers 503 policy_upgrading.
	Retried int
	// Shadows counts the shadow follow-ups' decisions by outcome
	// (shadow_dropped, shadow_transferred, rejected), each position once.
	Shadows map[string]int
}

// Done reports whether an attempt finished the upgrade.
func (u *UpgradeRun) Done() bool { return !u.Ended.IsZero() }

// runUpgrade waits for a seeded moment in the middle of the load (between
// 30 % and 50 % of it), then runs "registry policy upgrade --to 2" until it
// succeeds or the load ends, while the injector keeps faulting everything.
func (r *run) runUpgrade(ctx context.Context) {
	frac := 30 + r.work.intn(21)
	if !sleep(ctx, r.cfg.Duration*time.Duration(frac)/100) {
		return
	}
	r.upgrade.Started = time.Now()
	r.logf("policy upgrade: starting (%d%% into the load)", frac)
	r.upgradeUntil(ctx, true)
}

// finishUpgrade, after healing, resumes an upgrade the load phase did not
// finish, within 3 minutes.
func (r *run) finishUpgrade(ctx context.Context) {
	if r.upgrade.Done() {
		return
	}
	if r.upgrade.Started.IsZero() {
		r.upgrade.Started = time.Now()
	}
	r.logf("policy upgrade: not finished under load; resuming after healing")
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	r.upgradeUntil(ctx, false)
	if !r.upgrade.Done() {
		r.logf("policy upgrade: NOT finished: %v", r.upgrade.Failures)
	}
}

// upgradeUntil runs attempts until one succeeds or ctx ends; with kill,
// the first attempt is killed after a seeded delay.
func (r *run) upgradeUntil(ctx context.Context, kill bool) {
	for ctx.Err() == nil && !r.upgrade.Done() {
		r.upgrade.Attempts++
		n := r.upgrade.Attempts
		var killAfter time.Duration
		if kill && n == 1 {
			killAfter = time.Duration(200+r.work.intn(2800)) * time.Millisecond
		}
		err := r.upgradeOnce(ctx, n, killAfter)
		if err == nil {
			r.upgrade.Ended = time.Now()
			r.afterUpgrade()
			r.logf("policy upgrade: attempt %d finished; the upgrade took %s", n, r.upgrade.Ended.Sub(r.upgrade.Started).Round(time.Millisecond))
			return
		}
		r.upgrade.Failures = append(r.upgrade.Failures, fmt.Sprintf("attempt %d: %v", n, err))
		r.logf("policy upgrade: attempt %d failed: %v; retrying", n, err)
		sleep(ctx, time.Second)
	}
}

// upgradeOnce runs the upgrade as a process, with the registry processes'
// environment; a killAfter > 0 kills it then (FaultKillUpgrade).
func (r *run) upgradeOnce(ctx context.Context, n int, killAfter time.Duration) error {
	logf, err := os.Create(filepath.Join(r.cfg.Dir, fmt.Sprintf("upgrade-%d.log", n)))
	if err != nil {
		return err
	}
	defer logf.Close()
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(actx, r.cfg.Registry, "policy", "upgrade", "--to", "2", "--admin-key-file", r.adminKey)
	cmd.Env = append(append(os.Environ(), r.env...), "CHAOS_NODE=upgrade")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting registry policy upgrade: %w", err)
	}
	if killAfter > 0 {
		t := time.AfterFunc(killAfter, func() {
			if cmd.Process.Kill() == nil {
				r.faults.add(FaultKillUpgrade)
				r.logf("fault: %s after %s", FaultKillUpgrade, killAfter)
			}
		})
		defer t.Stop()
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("registry policy upgrade (log %s): %w", logf.Name(), err)
	}
	return nil
}

// upgradeWaits fills u.Waits and u.Retried from the collected run.
func upgradeWaits(u *UpgradeRun, in *Input) {
	frozen, active := map[int32]time.Time{}, map[int32]time.Time{}
	u.Shadows = map[string]int{}
	seen := map[Position]bool{}
	for _, rec := range in.Registrations {
		d, err := events.DecodeDecision(rec)
		if err != nil {
			continue
		}
		if at := (Position{d.ClaimPartition, d.ClaimOffset}); d.Command == events.CommandShadow && !seen[at] {
			seen[at] = true
			u.Shadows[d.Outcome]++
		}
		p := d.ClaimPartition
		switch {
		case d.Outcome == events.OutcomeFrozen:
			if t, ok := frozen[p]; !ok || rec.Timestamp.Before(t) {
				frozen[p] = rec.Timestamp
			}
		case d.Outcome == events.OutcomeActivated:
			if t, ok := active[p]; !ok || rec.Timestamp.Before(t) {
				active[p] = rec.Timestamp
			}
		}
	}
	u.Waits = map[int32]time.Duration{}
	for p, f := range frozen {
		if a, ok := active[p]; ok {
			u.Waits[p] = a.Sub(f)
		}
	}
	for _, op := range in.Ops {
		if upgrading(op) {
			u.Retried++
		}
	}
}

// upgradingAnswer is send's Op.Error for an answer 503 policy_upgrading.
var upgradingAnswer = fmt.Sprintf("answer %d %s %s", http.StatusServiceUnavailable, "error", events.ReasonPolicyUpgrading)

// upgrading reports whether op was answered 503 policy_upgrading.
func upgrading(op Op) bool {
	return op.Code == http.StatusServiceUnavailable && op.Error == upgradingAnswer
}

// afterUpgrade drops REGISTRY_POLICY_VERSION=1 from the registry
// processes' environment, as the operator does once the upgrade finished:
// the setting is for a NEW database, and a database that decides under
// version 2 refuses to start a process that asks for 1 (ErrPolicyVersion).
// Until then a restarted process exits and is restarted again.
func (r *run) afterUpgrade() {
	env := slices.DeleteFunc(slices.Clone(r.env), func(v string) bool { return strings.HasPrefix(v, "REGISTRY_POLICY_VERSION=") })
	for _, p := range append(slices.Clone(r.projectors), r.apis...) {
		p.setEnv(env)
	}
}
