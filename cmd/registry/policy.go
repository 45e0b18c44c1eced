package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/internal/cli"
	"github.com/usernameregistry/registry/internal/pg"
	"github.com/usernameregistry/registry/projector/migrations"
	"github.com/usernameregistry/registry/projector/upgrade"
)

const policyHelp = `Usage: registry policy diff --to N [--json]
       registry policy upgrade --to N

diff reports what moving the registry to username policy version N would
do, from the live projection: names N refuses, names whose canonical form
or key changes (with their new partition), and collision groups, holders
that N puts under one key (they keep their names, grandfathered). It
changes nothing. Exit status 0 when nothing collides, 1 otherwise.

upgrade moves the running registry to version N through the claims log:
freezes every partition, waits until every partition decided its freeze,
no rename is under way and the outbox is empty, carries every holder,
hold and runtime reservation into the partition of its key under N, and
activates N in every partition. It is resumable after a crash and
harmless to run twice. Needs the projectors running and the admin key
file they verify with. See docs/operations.md, "Upgrading the username
policy".

Flags:
`

// errCollisions makes diff exit 1.
var errCollisions = errors.New("holders collide under the new version (see above)")

// errInterrupted makes an upgrade stopped by SIGINT or SIGTERM exit 1
// instead of 0 (cli.Run treats a bare context.Canceled as a clean stop):
// the registry refuses writes until the same command runs again.
var errInterrupted = errors.New("interrupted before the upgrade finished: the registry answers writes 503 policy_upgrading until the same command runs again, which resumes it")

func runPolicy(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	if len(args) == 0 || (args[0] != "diff" && args[0] != "upgrade") {
		// No subcommand, no flags yet: the help without its "Flags:" heading.
		fmt.Fprint(stdout, strings.TrimSuffix(policyHelp, "Flags:\n")+"Run 'registry policy diff -h' for the flags.\n")
		if len(args) > 0 && args[0] != "-h" && args[0] != "--help" && args[0] != "help" {
			return fmt.Errorf("unknown policy command %q: want diff or upgrade", args[0])
		}
		return errUsage
	}
	sub := args[0]
	var c config
	var to int
	var asJSON bool
	fs := flagSet("policy "+sub, &c, stdout, "brokers", "database", "admin-key")
	fs.IntVar(&to, "to", 0, "the username policy version to move to")
	if sub == "diff" {
		fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	}
	fs.Usage = cli.UsageWith(fs, policyHelp)
	if err := parse(fs, args[1:], &c); err != nil {
		return err
	}
	if to < 1 {
		return errors.New("--to is required: the username policy version to move to")
	}
	pool, err := pg.Connect(ctx, c.databaseURL, 4)
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := migrations.Migrate(ctx, pool, log); err != nil {
		return err
	}
	var partitions int
	if err := pool.QueryRow(ctx, `SELECT partitions FROM topic_layout ORDER BY topic LIMIT 1`).Scan(&partitions); err != nil {
		return fmt.Errorf("reading the claims topic's partition count from the database (has a projector run?): %w", err)
	}
	if sub == "diff" {
		rep, err := upgrade.Diff(ctx, pool, partitions, to)
		if err != nil {
			return err
		}
		if asJSON {
			err = printDiffJSON(stdout, rep)
		} else {
			printDiff(stdout, rep)
		}
		if err == nil && len(rep.Groups) > 0 {
			return errCollisions
		}
		return err
	}
	keys, err := c.auth.loadAdminKeys()
	if err != nil {
		return err
	}
	opts, err := c.KafkaOptions(log)
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(append(opts, kgo.DefaultProduceTopic("claims"), kgo.ProducerLinger(0))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	hook, err := failpointHookOf(upgrade.Failpoints) // REGISTRY_FAILPOINTS, in the chaos harness's build only
	if err != nil {
		return err
	}
	_, err = upgrade.Run(ctx, upgrade.Config{Pool: pool, Producer: cl, Partitions: partitions, To: to, AdminKeys: keys, Out: stdout, Failpoint: hook})
	if err != nil && ctx.Err() != nil {
		return errInterrupted
	}
	return err
}

func printDiff(w io.Writer, r *upgrade.Report) {
	if r.To <= r.From {
		fmt.Fprintf(w, "the registry decides under username policy version %d: nothing to move to version %d\n", r.From, r.To)
		return
	}
	fmt.Fprintf(w, "username policy %d -> %d: %d holders\n", r.From, r.To, r.Holders)
	fmt.Fprintf(w, "\nnames version %d refuses (they stay with their holders): %d\n", r.To, len(r.Invalid))
	for _, e := range r.Invalid {
		fmt.Fprintf(w, "  %s (held by %s) carried as %q, key %q, partition %d -> %d\n", e.Username, e.UserID, e.Canonical, e.Key, e.OldPartition, e.NewPartition)
	}
	fmt.Fprintf(w, "\nrefused names also carried under the key of their displayed form (they block what they look like): %d\n", len(r.Shadows))
	for _, e := range r.Shadows {
		fmt.Fprintf(w, "  %s: key %q, partition %d\n", e.Username, e.Key, e.NewPartition)
	}
	fmt.Fprintf(w, "\nnames whose canonical form or key changes: %d\n", len(r.Changed))
	for _, e := range r.Changed {
		fmt.Fprintf(w, "  %s: canonical %q -> %q, key %q -> %q, partition %d -> %d\n", e.Username, e.OldCanonical, e.Canonical, e.OldKey, e.Key, e.OldPartition, e.NewPartition)
	}
	fmt.Fprintf(w, "\ncollision groups (every holder keeps the name; new claims of the key are refused): %d\n", len(r.Groups))
	for _, g := range r.Groups {
		fmt.Fprintf(w, "  key %q (partition %d): %s\n", g.Key, g.Partition, strings.Join(g.Holders, ", "))
	}
	if len(r.Clashes) > 0 {
		fmt.Fprintf(w, "\ngroups with one canonical form held twice: %d (the upgrade refuses to run until one is released or transferred)\n", len(r.Clashes))
	}
}

func printDiffJSON(w io.Writer, r *upgrade.Report) error {
	type entry struct {
		Username     string `json:"username"`
		UserID       string `json:"user_id"`
		OldCanonical string `json:"old_canonical"`
		OldKey       string `json:"old_key"`
		OldPartition int32  `json:"old_partition"`
		Canonical    string `json:"canonical"`
		Key          string `json:"key"`
		Partition    int32  `json:"partition"`
		Valid        bool   `json:"valid"`
	}
	conv := func(es []upgrade.Entry) []entry {
		out := []entry{}
		for _, e := range es {
			out = append(out, entry{e.Username, e.UserID, e.OldCanonical, e.OldKey, e.OldPartition, e.Canonical, e.Key, e.NewPartition, e.Valid})
		}
		return out
	}
	groups := func(gs []upgrade.Group) []upgrade.Group {
		if gs == nil {
			return []upgrade.Group{}
		}
		return gs
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]any{"from": r.From, "to": r.To, "holders": r.Holders, "invalid": conv(r.Invalid), "shadows": conv(r.Shadows),
		"changed": conv(r.Changed), "groups": groups(r.Groups), "clashes": groups(r.Clashes)})
}
