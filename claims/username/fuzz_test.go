package username

import (
	"errors"
	"testing"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// FuzzNormalize checks the properties the registry relies on (issue 11):
// Normalize never panics and every rejection wraps ErrInvalid; normalizing
// the canonical form gives the same canonical form and key; an accepted
// typed form and its canonical form share the key; canonically equivalent
// inputs (NFC, NFD) get the same result. The corpus is in
// testdata/fuzz/FuzzNormalize.
func FuzzNormalize(f *testing.F) {
	for _, seed := range []string{
		"alice", "Alice", "ＡＬＩＣＥ", "аlice", "аdmin", "", " ", "a\tb", "\xff",
		"e\u0301", "İ", "ΣΑΣ", "l·l", "a·b", "א1", "aא", "al\u200dice", "ﬁ", "1é",
		"Iumen11", "P\u0130LOT7", "zoe\u0301\u0301", "d0g", "\u0430cmecorp", "\u1100\u1161\u11a8",
		"..", ".well-known", "a/b", "jos\u00e9_", "orch\u0456d5", "\u13aa\u13b5\u13ac", "g\u0585\u0585gle",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, typed string) {
		checkProperties(t, typed)
	})
}

// Inspect is the latest policy's Inspect.
func Inspect(typed string) (Username, bool) { return v2.Inspect(typed) }

func checkProperties(t *testing.T, typed string) {
	t.Helper()
	u, err := Normalize(typed)
	for _, form := range []norm.Form{norm.NFC, norm.NFD} {
		if !utf8.ValidString(typed) || form.IsNormalString(typed) {
			continue
		}
		other, oerr := Normalize(form.String(typed))
		if (err == nil) != (oerr == nil) || other.Canonical != u.Canonical || other.Key != u.Key {
			t.Fatalf("Normalize(%+q) = %+q, %v; its canonically equivalent %+q gives %+q, %v",
				typed, u, err, form.String(typed), other, oerr)
		}
	}
	if i, ok := Inspect(typed); err == nil && (!ok || i.Canonical != u.Canonical || i.Key != u.Key) {
		t.Fatalf("Normalize(%+q) = %+q, but Inspect gives %+q, %v", typed, u, i, ok)
	}
	if err != nil {
		if !errors.Is(err, ErrInvalid) || err.Error() == "" {
			t.Fatalf("Normalize(%+q) error %v does not wrap ErrInvalid with a detail", typed, err)
		}
		return
	}
	n := utf8.RuneCountInString(u.Canonical)
	switch {
	case u.Typed != typed:
		t.Fatalf("Typed = %+q; want %+q", u.Typed, typed)
	case n < 1 || n > MaxRunes || !utf8.ValidString(u.Canonical):
		t.Fatalf("Normalize(%+q): bad Canonical %+q (%d runes)", typed, u.Canonical, n)
	case u.Key == "" || !utf8.ValidString(u.Key):
		t.Fatalf("Normalize(%+q): bad Key %+q", typed, u.Key)
	}
	again, err := Normalize(u.Canonical)
	if err != nil {
		t.Fatalf("Normalize(%+q) ok but its canonical %+q is refused: %v", typed, u.Canonical, err)
	}
	if again.Canonical != u.Canonical || again.Key != u.Key {
		t.Fatalf("Normalize(%+q) = %+q; normalizing Canonical again gives %+q", typed, u, again)
	}
	if k, err := keyOf(norm.NFC.String(typed)); err != nil || k != u.Key {
		t.Fatalf("Normalize(%+q) accepted it with key %+q, but the typed form's key is %+q (%v)", typed, u.Key, k, err)
	}
}
