package chaos

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
)

// The lifecycle part of the workload: releases, reclaims (by the former
// holder and by others, inside and after holds), renames (including ones
// whose to collides with a held or reserved name), runtime reservations and
// transfers, over a small set of names of their own ("lc…") and a few
// users, so they contend. The claim properties (a) to (i) look only at the
// other names; the lifecycle properties (j) to (m) at these.

// lifecycleHold is the hold period the chaos API nodes run with: short, so
// holds begin and end during a run.
const lifecycleHold = 2 * time.Second

const (
	lifeNamesN = 10
	lifeUsersN = 4
)

type lifeNames struct {
	prefix string
	names  []string
	users  []string
}

// newLifeNames draws the lifecycle names and users. With upgrade three
// more names, "lcI<tag>-s", "-t" and "-u", are names version 1 accepts
// and version 2 refuses (the capital I displays like an l): held when the
// upgrade runs, each is carried twice, under its canonical form's key and,
// as a shadow, under the key it is displayed as; the releases, renames and
// transfers of them after the upgrade (the API writes them as Inspect
// reads the name) make the shadows follow, which (n) checks: every row of
// a lifecycle name, a shadow included, must name the holder the decisions
// give it.
func newLifeNames(w *workload, upgrade bool) lifeNames {
	l := lifeNames{prefix: "lc" + w.tag + "-"}
	for i := range lifeNamesN {
		l.names = append(l.names, l.prefix+strconv.Itoa(i))
	}
	for _, suffix := range []string{"s", "t", "u"} {
		if n := "lcI" + w.tag + "-" + suffix; upgrade && hasShadow(n) {
			l.names = append(l.names, n)
		}
	}
	for range lifeUsersN {
		l.users = append(l.users, w.uuid())
	}
	return l
}

// hasShadow reports whether version 1 accepts typed and version 2 refuses
// it but can read it, and displays it under another key than its
// canonical form's: an upgrade carries it with a shadow.
func hasShadow(typed string) bool {
	v1, v2 := policyOf(1), policyOf(2)
	if _, err := v1.Normalize(typed); err != nil {
		return false
	}
	if _, err := v2.Normalize(typed); err == nil {
		return false
	}
	u, ok := v2.Inspect(typed)
	shown, sok := v2.ShownKey(typed)
	return ok && sok && shown != u.Key
}

// isLifeName reports whether canonical is one of the lifecycle names.
func isLifeName(canonical string) bool { return strings.HasPrefix(canonical, "lc") }

// lifecycle draws a lifecycle command (w.mu held).
func (w *workload) lifecycle() Op {
	l := &w.life
	op := Op{Kind: KindLifecycle, RequestID: w.uuid(), UserID: l.users[w.rng.IntN(len(l.users))],
		Username: l.names[w.rng.IntN(len(l.names))], API: w.rng.IntN(1 << 16)}
	switch r := w.rng.IntN(20); {
	case r < 7:
		op.Command = "claim"
	case r < 11:
		op.Command = events.CommandRelease
	case r < 16:
		op.Command, op.To = events.CommandRename, l.names[w.rng.IntN(len(l.names))]
	case r < 17:
		op.Command = events.CommandReserve
	case r < 18:
		op.Command = events.CommandUnreserve
	default:
		op.Command, op.To = events.CommandTransfer, l.users[w.rng.IntN(len(l.users))]
	}
	return op
}

// sendLifecycle sends a lifecycle op and fills in its result: the status,
// or the reason of a rejection, or unknown.
func sendLifecycle(ctx context.Context, client *http.Client, url, token string, op *Op, wait time.Duration) {
	method, path, body := http.MethodPost, "", map[string]string{"request_id": op.RequestID}
	switch op.Command {
	case "claim":
		path, body["user_id"], body["username"] = "/v1/claims", op.UserID, op.Username
	case events.CommandRelease:
		path, body["user_id"], body["username"] = "/v1/releases", op.UserID, op.Username
	case events.CommandRename:
		path, body["user_id"], body["from"], body["to"] = "/v1/renames", op.UserID, op.Username, op.To
	case events.CommandReserve:
		method, path = http.MethodPut, "/v1/admin/reserved/"+op.Username
	case events.CommandUnreserve:
		method, path = http.MethodDelete, "/v1/admin/reserved/"+op.Username
	case events.CommandTransfer:
		path, body["username"], body["to_user_id"] = "/v1/admin/transfers", op.Username, op.To
	}
	raw, _ := json.Marshal(body)
	op.Invoke = time.Now()
	defer func() { op.Complete = time.Now() }()
	op.Result = ResultUnknown
	req, err := http.NewRequestWithContext(ctx, method, url+path+"?wait="+wait.String(), bytes.NewReader(raw))
	if err != nil {
		op.Error = err.Error()
		return
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if len(raw) > 0 {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		op.Error = err.Error()
		return
	}
	defer resp.Body.Close()
	op.Code = resp.StatusCode
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var a answer
	if err != nil || json.Unmarshal(b, &a) != nil {
		op.Error = fmt.Sprintf("answer %d unreadable: %v %q", resp.StatusCode, err, b)
		return
	}
	switch {
	case resp.StatusCode < 300 && a.Status != "pending":
		op.Result = a.Status
	case resp.StatusCode == http.StatusConflict || resp.StatusCode == http.StatusUnprocessableEntity:
		op.Result = a.Reason
	default:
		op.Error = fmt.Sprintf("answer %d %s %s", resp.StatusCode, a.Status, a.Reason)
	}
}

// Lifecycle properties, numbered after the claim properties.
const (
	PropKeyOneHolder   = "k" // at every log position each key has at most one holder; releases and renames only by the holder
	PropNoGrantInHold  = "l" // no name is granted to another user inside its hold
	PropRenameOutcome  = "m" // every rename that locked from ends in exactly one final decision
	PropLifeProjection = "n" // the lifecycle names' holders in the projection = the fold of their decisions
)

// lifeDecision is a first decision of a lifecycle name, with its position.
type lifeDecision struct {
	d     *events.Decision
	value []byte
}

// lifecycleChecks runs (j) to (m) over the decisions of the lifecycle
// names, folded per partition in claim order (a key lives in one
// partition). The fold is written here again, apart from the projector's,
// so that a bug in that one is not repeated.
func (c *checker) lifecycleChecks() {
	first := map[Position]*lifeDecision{}
	finals := map[string]map[string]bool{} // rename request_id -> distinct final decisions
	locked := map[string]bool{}
	for _, rec := range c.in.Registrations {
		d, err := events.DecodeDecision(rec)
		if err != nil || !isLifeDecision(d) {
			continue
		}
		at := Position{d.ClaimPartition, d.ClaimOffset}
		if _, ok := first[at]; !ok {
			first[at] = &lifeDecision{d: d, value: rec.Value}
		}
		if d.Command == events.CommandRename {
			if d.Outcome == events.OutcomeRenaming {
				locked[d.RequestID] = true
			} else if d.Step == 3 {
				if finals[d.RequestID] == nil {
					finals[d.RequestID] = map[string]bool{}
				}
				finals[d.RequestID][string(rec.Value)] = true
			}
		}
	}
	for id := range locked {
		switch n := len(finals[id]); {
		case n == 0:
			c.r.add(PropRenameOutcome, "rename %s locked from and never ended", id)
		case n > 1:
			c.r.add(PropRenameOutcome, "rename %s has %d different final decisions", id, n)
		}
	}
	positions := slices.SortedFunc(func(yield func(Position) bool) {
		for p := range first {
			if !yield(p) {
				return
			}
		}
	}, func(a, b Position) int {
		return cmp.Or(cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
	})
	type hold struct {
		user  string
		until time.Time
	}
	tos := map[[2]string]bool{} // (user, canonical) registered by a rename's step 2
	for _, f := range first {
		if f.d.Command == events.CommandRenameTo && f.d.Outcome == events.OutcomeRegistered {
			tos[[2]string{f.d.UserID, f.d.Canonical}] = true
		}
	}
	holder := map[string]string{} // canonical -> user (keys: one canonical per lifecycle name)
	holds := map[string]hold{}
	for _, at := range positions {
		d := first[at].d
		name := d.Canonical
		switch {
		case d.Outcome == events.OutcomeRegistered && d.HolderRequestID == d.RequestID:
			if h := holder[name]; h != "" && h != d.UserID {
				c.r.add(PropKeyOneHolder, "%s granted to %s at %v while %s held it", name, d.UserID, at, h)
			}
			if h, ok := holds[name]; ok && h.user != d.UserID && d.RegisteredAt != nil && d.RegisteredAt.Before(h.until) {
				c.r.add(PropNoGrantInHold, "%s granted to %s at %v (%s) inside %s's hold until %s", name, d.UserID, at, d.RegisteredAt, h.user, h.until)
			}
			holder[name] = d.UserID
			delete(holds, name)
		case d.Outcome == events.OutcomeTransferred:
			holder[name] = d.UserID
			delete(holds, name)
		case d.Outcome == events.OutcomeReleased || d.Outcome == events.OutcomeRenamed:
			from := name
			if d.Outcome == events.OutcomeRenamed {
				from = d.From
			}
			if holder[from] != d.UserID {
				c.r.add(PropKeyOneHolder, "%s %s by %s at %v, but %q held it", d.Outcome, from, d.UserID, at, holder[from])
			}
			delete(holder, from)
			if d.HeldUntil != nil {
				holds[from] = hold{d.UserID, *d.HeldUntil}
			}
			if d.Outcome == events.OutcomeRenamed && !tos[[2]string{d.UserID, d.To}] {
				c.r.add(PropRenameOutcome, "rename %s ended renamed but %s was never registered to %s by a rename step", d.RequestID, d.To, d.UserID)
			}
		}
	}
	for name, user := range holder {
		if h, ok := c.held[name]; !ok || h.UserID != user {
			c.r.add(PropLifeProjection, "%s: the decisions give it to %s, the projection to %q", name, user, h.UserID)
		}
	}
	for name, h := range c.held {
		if isLifeName(name) && holder[name] == "" {
			c.r.add(PropLifeProjection, "%s: the projection gives it to %s, the decisions to nobody", name, h.UserID)
		}
	}
	for _, h := range c.rows { // the name's other rows (a refused name's shadow): it follows its name
		if isLifeName(h.Canonical) && h != c.held[h.Canonical] && holder[h.Canonical] != h.UserID {
			c.r.add(PropLifeProjection, "%s: its row under key %q (at %s) gives it to %s, the decisions to %q", h.Canonical, h.Key, h.At, h.UserID, holder[h.Canonical])
		}
	}
}

// isLifeDecision reports whether d decides a command on a lifecycle name.
func isLifeDecision(d *events.Decision) bool {
	return isLifeName(d.Canonical) || isLifeName(d.From) || (d.Canonical == "" && d.Command != "")
}

// isUpgradeMarker reports whether d decides a policy upgrade's marker
// (freeze or activate), which names no username and which the claim model
// decides.
func isUpgradeMarker(d *events.Decision) bool {
	return d.Command == events.CommandFreeze || d.Command == events.CommandActivate
}

// splitLifecycle returns a copy of in without the lifecycle names' records,
// decisions, ledger rows, holders and operations, for the claim
// properties, whose reference model knows only claims.
func splitLifecycle(in *Input) *Input {
	out := *in
	out.Claims = slices.DeleteFunc(slices.Clone(in.Claims), func(r *kgo.Record) bool {
		typ, cmd, err := events.DecodeCommand(r)
		if err == nil && (isUpgradeType(typ) || typ == events.TypeShadowFollowing) { // the model follows the policy upgrade and the shadows: keep all but the lifecycle names'
			return isLifeName(cmd.Canonical)
		}
		return err == nil && (typ != events.TypeClaimSubmitted || isLifeName(cmd.Canonical))
	})
	out.Registrations = slices.DeleteFunc(slices.Clone(in.Registrations), func(r *kgo.Record) bool {
		d, err := events.DecodeDecision(r)
		return err == nil && isLifeDecision(d) && !isUpgradeMarker(d)
	})
	out.Ledger = slices.DeleteFunc(slices.Clone(in.Ledger), func(l LedgerRow) bool {
		var d events.Decision
		return json.Unmarshal(l.Decision, &d) == nil && isLifeDecision(&d) && !isUpgradeMarker(&d)
	})
	out.Usernames = slices.DeleteFunc(slices.Clone(in.Usernames), func(h Holding) bool { return isLifeName(h.Canonical) })
	out.Ops = slices.DeleteFunc(slices.Clone(in.Ops), func(o Op) bool { return o.Kind == KindLifecycle })
	return &out
}
