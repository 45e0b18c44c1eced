package main

import (
	"slices"
	"testing"

	"github.com/usernameregistry/registry/events"
)

// TestRejectionsKnowEveryReason: `registry rejections --reason` accepts
// every reason in events.Reasons, and its summaries list them all, in
// order.
func TestRejectionsKnowEveryReason(t *testing.T) {
	t.Parallel()
	all, err := newRejectionFilter("", "")
	if err != nil {
		t.Fatal(err)
	}
	if got := all.columns(); !slices.Equal(got, events.ReasonNames()) {
		t.Errorf("summary columns %q, want %q", got, events.ReasonNames())
	}
	for _, r := range events.Reasons {
		f, err := newRejectionFilter(r.Name, "")
		if err != nil || !slices.Equal(f.columns(), []string{r.Name}) {
			t.Errorf("--reason %s: %v, columns %q", r.Name, err, f.columns())
		}
	}
	if _, err := newRejectionFilter("expired", ""); err == nil {
		t.Error("--reason expired accepted")
	}
}
