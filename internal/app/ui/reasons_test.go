package ui

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/usernameregistry/registry/events"
)

// TestEveryReasonIsCharted: the page charts, colours and lists every
// rejection reason in events.Reasons, in that order: the server's list,
// the script's initial list and the stylesheet's classes all follow it.
func TestEveryReasonIsCharted(t *testing.T) {
	t.Parallel()
	js, err := assetFS.ReadFile("assets/app.js")
	if err != nil {
		t.Fatal(err)
	}
	css, err := assetFS.ReadFile("assets/app.css")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`reasons: \[([^\]]*)\]`).FindSubmatch(js)
	if m == nil {
		t.Fatal("app.js has no initial reasons list")
	}
	var script []string
	for _, r := range strings.Split(string(m[1]), ",") {
		script = append(script, strings.Trim(strings.TrimSpace(r), "'\""))
	}
	if want := events.ReasonNames(); !slices.Equal(script, want) || !slices.Equal(reasons, want) {
		t.Errorf("reasons: app.js %q, server %q, want %q", script, reasons, want)
	}
	for i, r := range events.Reasons {
		if reasonIndex(r.Name) != i {
			t.Errorf("%s is not charted in place %d", r.Name, i)
		}
		if !strings.Contains(string(css), ".r-"+r.Name+" ") || !strings.Contains(string(css), "--"+r.Name+":") {
			t.Errorf("app.css has no colour for %s", r.Name)
		}
	}
}
