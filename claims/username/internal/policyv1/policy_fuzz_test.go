package policyv1

import (
	"errors"
	"testing"
	"unicode/utf8"
)

func FuzzNormalize(f *testing.F) {
	for _, seed := range []string{
		"alice", "Alice", "ＡＬＩＣＥ", "аlice", "аdmin", "", " ", "a\tb", "\xff",
		"e\u0301", "İ", "ΣΑΣ", "l·l", "a·b", "א1", "aא", "al\u200dice", "ﬁ", "1é",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, typed string) {
		checkInvariants(t, typed)
	})
}

// checkInvariants asserts what the rest of the registry relies on: every
// rejection wraps ErrInvalid, and every accepted name is a fixed point, so
// re-normalizing a stored Canonical can never move it to another partition.
func checkInvariants(t *testing.T, typed string) {
	t.Helper()
	u, err := Normalize(typed)
	if err != nil {
		if !errors.Is(err, ErrInvalid) || err.Error() == "" {
			t.Fatalf("Normalize(%q) error %v does not wrap ErrInvalid with a detail", typed, err)
		}
		return
	}
	checkAccepted(t, typed, u)
	again, err := Normalize(u.Canonical)
	if err != nil {
		t.Fatalf("Normalize(%q) ok but its canonical %q is rejected: %v", typed, u.Canonical, err)
	}
	if again.Canonical != u.Canonical || again.Key != u.Key {
		t.Fatalf("Normalize(%q) = %+q; normalizing Canonical again gives %+q", typed, u, again)
	}
}

func checkAccepted(t *testing.T, typed string, u Username) {
	t.Helper()
	n := utf8.RuneCountInString(u.Canonical)
	switch {
	case u.Typed != typed:
		t.Fatalf("Typed = %q; want %q", u.Typed, typed)
	case n < 1 || n > MaxRunes || !utf8.ValidString(u.Canonical):
		t.Fatalf("Normalize(%q): bad Canonical %q (%d runes)", typed, u.Canonical, n)
	case u.Key == "" || !utf8.ValidString(u.Key):
		t.Fatalf("Normalize(%q): bad Key %q", typed, u.Key)
	}
}
