// Package configtable checks README.md's configuration table against the
// flags the commands really declare, so the table cannot fall behind them.
// Each binary's tests hand it the -h output of each of its commands.
package configtable

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Row is one line of the table.
type Row struct {
	Flag     string   // without the dashes; empty for an environment-only setting
	Env      string   // empty when the setting has no variable
	Default  string   // as the flag's usage shows it; empty for a zero value
	DevValue string   // the default of `dev` when the row gives one apart
	Commands []string // the commands the row says take it
}

// Read parses the table under "## Configuration" in the README at path.
func Read(t testing.TB, path string) []Row {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	start := strings.Index(text, "\n## Configuration")
	if start < 0 {
		t.Fatal("README has no Configuration section")
	}
	var rows []Row
	for _, line := range strings.Split(text[start:], "\n")[2:] {
		if strings.HasPrefix(line, "## ") {
			break
		}
		cells := strings.Split(line, "|")
		if len(cells) < 6 || (!strings.HasPrefix(strings.TrimSpace(cells[1]), "`--") && strings.TrimSpace(cells[1]) != "–") {
			continue
		}
		r := Row{}
		def := strings.TrimSpace(cells[3])
		if m := regexp.MustCompile("^`([^`]*)`").FindStringSubmatch(def); m != nil {
			r.Default = m[1]
		}
		if m := regexp.MustCompile("\\(`dev`: `([^`]*)`\\)").FindStringSubmatch(def); m != nil {
			r.DevValue = m[1]
		}
		for _, c := range strings.Split(cells[4], ",") {
			r.Commands = append(r.Commands, strings.Trim(strings.TrimSpace(c), "`"))
		}
		// A row may name several flags and their variables in order
		// ("`--tls-cert`, `--tls-key`"): one Row each.
		flags, envs := strings.Split(cells[1], ","), strings.Split(cells[2], ",")
		for i, f := range flags {
			one := r
			one.Flag = strings.Trim(strings.TrimSpace(f), "`-–")
			if i < len(envs) {
				one.Env = strings.Trim(strings.TrimSpace(envs[i]), "`–")
			}
			rows = append(rows, one)
		}
	}
	if len(rows) < 10 {
		t.Fatalf("found %d rows in the configuration table; the parser lost some", len(rows))
	}
	return rows
}

// Flag is a flag as a command's -h output shows it.
type Flag struct {
	Default string // "" for a zero value
	Usage   string
}

var flagLine = regexp.MustCompile(`(?m)^  -([a-z0-9-]+)(?: [^\n\t]*)?\n?\s*\t?(.*)$`)

// Parse reads the flags out of a flag.FlagSet's PrintDefaults output.
func Parse(usage string) map[string]Flag {
	out := map[string]Flag{}
	for _, m := range flagLine.FindAllStringSubmatch(usage, -1) {
		f := Flag{Usage: m[2]}
		if d := regexp.MustCompile(`\(default "?([^")]*)"?\)$`).FindStringSubmatch(m[2]); d != nil {
			f.Default = d[1]
		}
		out[m[1]] = f
	}
	return out
}

// Check compares rows with the commands' flags (usage: each command's -h
// output). For every command the row lists that is one of these commands,
// the flag must exist with the row's default and mention the row's
// variable; and every flag of these commands that has an environment
// variable must have a row listing the command. Rows may list commands of
// other binaries; other names must be in others.
func Check(t testing.TB, rows []Row, usage map[string]string, others []string) {
	t.Helper()
	flags := map[string]map[string]Flag{}
	for cmd, u := range usage {
		flags[cmd] = Parse(u)
		if len(flags[cmd]) == 0 && strings.Contains(u, "  -") {
			t.Errorf("%s: no flags parsed from its usage", cmd)
		}
	}
	listed := map[[2]string]bool{}
	for _, r := range rows {
		for _, cmd := range r.Commands {
			if cmd == "all" || r.Flag == "" {
				continue
			}
			fs, ok := flags[cmd]
			if !ok {
				if !slices.Contains(others, cmd) {
					t.Errorf("row --%s lists command %q, which does not exist", r.Flag, cmd)
				}
				continue
			}
			listed[[2]string{cmd, r.Flag}] = true
			f, ok := fs[r.Flag]
			if !ok {
				t.Errorf("row --%s lists %s, which has no such flag", r.Flag, cmd)
				continue
			}
			want := r.Default
			if cmd == "dev" && r.DevValue != "" {
				want = r.DevValue
			}
			// A flag whose zero value stands for a default resolved later
			// (the usage says "default X" or "empty is ...") may show that
			// effective default in the table.
			resolved := f.Default == "" && (strings.Contains(f.Usage, "default "+want) || strings.Contains(f.Usage, "empty is"))
			if f.Default != want && !resolved {
				t.Errorf("%s --%s: default %q, the table says %q", cmd, r.Flag, f.Default, want)
			}
			if r.Env != "" && !strings.Contains(f.Usage, r.Env) {
				t.Errorf("%s --%s: usage %q does not name %s", cmd, r.Flag, f.Usage, r.Env)
			}
		}
	}
	env := regexp.MustCompile(`\((?:[A-Z_]+=)?(REGISTRY_[A-Z_]+|DATABASE_URL)[=)]`)
	for cmd, fs := range flags {
		for name, f := range fs {
			if env.MatchString(f.Usage) && !listed[[2]string{cmd, name}] {
				t.Errorf("%s --%s (%s) has no row in the configuration table listing %s", cmd, name, f.Usage, cmd)
			}
		}
	}
}

// Unset empties every variable the rows name, so the flags show their
// built-in defaults.
func Unset(t *testing.T, rows []Row) {
	for _, r := range rows {
		if r.Env != "" {
			t.Setenv(r.Env, "")
		}
	}
}
