package policyv1

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestNormalizeRejects(t *testing.T) {
	tests := []struct {
		name, typed, detail string
	}{
		{"empty", "", "username is empty"},
		{"too many bytes", strings.Repeat("a", MaxRawBytes+1), "username is too long (more than 256 bytes as typed)"},
		{"invalid UTF-8", "al\xffice", "username is not valid UTF-8"},
		{"space", "alice smith", "username contains a space"},
		{"tab", "alice\tsmith", "username contains whitespace (U+0009)"},
		{"newline", "alice\n", "username contains whitespace (U+000A)"},
		{"no-break space", "alice\u00a0smith", "username contains whitespace (U+00A0)"},
		{"ideographic space", "alice\u3000", "username contains whitespace (U+3000)"},
		{"line separator", "a\u2028b", "username contains whitespace (U+2028)"},
		{"bell", "alice\a", "username contains a control character (U+0007)"},
		{"NUL", "a\x00b", "username contains a control character (U+0000)"},
		{"DEL", "a\x7fb", "username contains a control character (U+007F)"},
		{"65 runes", strings.Repeat("a", MaxRunes+1), "username is longer than 64 characters"},
		{"65 runes fullwidth", strings.Repeat("ａ", MaxRunes+1), "username is longer than 64 characters"},
		{"symbol", "a♥b", "username contains a character that is not allowed in usernames (U+2665)"},
		{"emoji", "😀alice", "username contains a character that is not allowed in usernames (U+1F600)"},
		{"compatibility char", "ﬁle", "username contains a character that is not allowed in usernames (U+FB01)"},
		{"math bold", "\U0001D400lice", "username contains a character that is not allowed in usernames (U+1D400)"},
		{"unassigned", "a\u0378", "username contains a character that is not allowed in usernames (U+0378)"},
		{"private use", "a\ue000", "username contains a character that is not allowed in usernames (U+E000)"},
		{"composes to a disallowed rune", "a<\u0338b", "username contains a character that is not allowed in usernames (U+226E)"},
		{"zero width space", "al\u200bice", "username contains an invisible formatting character (U+200B)"},
		{"RTL override", "a\u202eb", "username contains an invisible formatting character (U+202E)"},
		{"BOM", "\ufeffalice", "username contains an invisible formatting character (U+FEFF)"},
		{"stray joiner", "al\u200dice", "username contains an invisible joining character (U+200D) where it is not allowed"},
		{"stray middle dot", "a·b", "username uses U+00B7 in a position or combination that is not allowed"},
		{"non-ASCII starting with digit", "1é", "username with non-ASCII characters must start with a letter and end with a letter or a digit"},
		{"non-ASCII ending with underscore", "é_", "username with non-ASCII characters must start with a letter and end with a letter or a digit"},
		{"leading combining mark", "\u0301a", "username with non-ASCII characters must start with a letter and end with a letter or a digit"},
		{"mixed directions", "aא", "username with right-to-left letters must start with a right-to-left letter, " +
			"end with a right-to-left letter or a digit, and must not contain left-to-right letters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := Normalize(tt.typed)
			assertInvalid(t, err, tt.detail)
			if u != (Username{}) {
				t.Errorf("Normalize(%q) returned %+v with an error; want zero Username", tt.typed, u)
			}
		})
	}
}

// assertInvalid checks the three promises every rejection makes.
func assertInvalid(t *testing.T, err error, detail string) {
	t.Helper()
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v; want one wrapping ErrInvalid", err)
	}
	var ie *InvalidError
	if !errors.As(err, &ie) {
		t.Fatalf("err = %T; want *InvalidError", err)
	}
	if err.Error() != detail || ie.Detail != detail {
		t.Errorf("err = %q; want %q", err.Error(), detail)
	}
}

func TestNormalizeAccepts(t *testing.T) {
	tests := []struct {
		typed, canonical, key string
	}{
		{"alice", "alice", "alice"},
		{"Alice", "alice", "alice"},
		{"ＡＬＩＣＥ", "alice", "alice"},
		{"аlice", "аlice", "alice"}, // Cyrillic а: own canonical form, same key
		{"ALICE_1", "alice_1", "alice_l"},
		{"l·l", "l·l", "l·l"},       // middle dot is allowed between two l's
		{"é1", "é1", "e\u0301l"},    // keys are NFD: not for display
		{"e\u0301", "é", "e\u0301"}, // canonical form is NFC
		{"ΣΑΣ", "σασ", "oao"},
		{"א1", "א1", "אl"},
		{"İ", "i̇", "i̇"},
		{strings.Repeat("a", MaxRunes), strings.Repeat("a", MaxRunes), strings.Repeat("a", MaxRunes)},
	}
	for _, tt := range tests {
		u, err := Normalize(tt.typed)
		if err != nil {
			t.Errorf("Normalize(%q) error: %v", tt.typed, err)
			continue
		}
		want := Username{Typed: tt.typed, Canonical: tt.canonical, Key: tt.key}
		if u != want {
			t.Errorf("Normalize(%q) = %+q; want %+q", tt.typed, u, want)
		}
	}
}

func TestEquivalentSpellingsShareKey(t *testing.T) {
	groups := [][]string{
		{"alice", "Alice", "ＡＬＩＣＥ", "аlice", "ALICE", "ａｌｉｃｅ"},
		{"admin", "ADMIN", "аdmin", "Аdmin", "ＡＤＭＩＮ", "adrnin"},
		{"mail", "rnail", "MAIL"},
		{"bob1", "bobl", "BOB1"},
	}
	for _, group := range groups {
		want := mustNormalize(t, group[0]).Key
		for _, typed := range group[1:] {
			if got := mustNormalize(t, typed).Key; got != want {
				t.Errorf("Key(%q) = %q; want %q, the key of %q", typed, got, want, group[0])
			}
		}
	}
}

// TestASCIISkipsDirectionRule pins the x/text behaviour documented in
// docs/usernames.md: the Bidi rule only bites once a name is non-ASCII.
func TestASCIISkipsDirectionRule(t *testing.T) {
	for _, typed := range []string{"1e", "e_", "e.", "é1"} {
		mustNormalize(t, typed)
	}
}

func TestJoinerAllowedInContextIsDroppedFromKey(t *testing.T) {
	with := mustNormalize(t, "می\u200cخواهم") // Persian uses ZWNJ inside words
	without := mustNormalize(t, "میخواهم")
	if with.Canonical == without.Canonical || with.Key != without.Key {
		t.Errorf("with ZWNJ %+q, without %+q; want distinct Canonical, same Key", with, without)
	}
}

func TestDistinctNamesHaveDistinctKeys(t *testing.T) {
	// Zero and lowercase o look different once case is mapped, so UTS #39
	// keeps them apart; this pins that down so a data change is noticed.
	for _, pair := range [][2]string{{"alice", "alicf"}, {"root", "r00t"}, {"noreply", "no-reply"}} {
		a, b := mustNormalize(t, pair[0]), mustNormalize(t, pair[1])
		if a.Key == b.Key {
			t.Errorf("%q and %q share key %q", pair[0], pair[1], a.Key)
		}
	}
}

func mustNormalize(t testing.TB, typed string) Username {
	t.Helper()
	u, err := Normalize(typed)
	if err != nil {
		t.Fatalf("Normalize(%q): %v", typed, err)
	}
	return u
}

func TestReserved(t *testing.T) {
	for _, name := range reservedNames {
		if !Reserved(mustNormalize(t, name)) {
			t.Errorf("Reserved(%q) = false", name)
		}
	}
	for _, typed := range []string{"ADMIN", "аdmin", "Аdmin", "ＡＤＭＩＮ", "Root", "rnail", "adrnin", "NoReply", "NULL"} {
		if !Reserved(mustNormalize(t, typed)) {
			t.Errorf("Reserved(%q) = false; want true", typed)
		}
	}
	for _, typed := range []string{"alice", "admin1", "administrators", "r00t", "mailbox"} {
		if Reserved(mustNormalize(t, typed)) {
			t.Errorf("Reserved(%q) = true; want false", typed)
		}
	}
}

func TestReservedListIsCanonicalAndDistinct(t *testing.T) {
	if len(reservedKeys) != len(reservedNames) {
		t.Errorf("%d reserved names give %d keys: two entries are confusable or duplicated",
			len(reservedNames), len(reservedKeys))
	}
	for _, name := range reservedNames {
		if u := mustNormalize(t, name); u.Canonical != name {
			t.Errorf("reserved %q is not canonical (%q)", name, u.Canonical)
		}
	}
}

func TestReservedZeroUsername(t *testing.T) {
	if Reserved(Username{}) {
		t.Error("Reserved(Username{}) = true")
	}
}

// TestNormalizeEverySingleRune checks the fuzz invariants exhaustively for
// one-rune names and names with one rune after "a" (so combining marks and
// joiners get a base), which covers every code point PRECIS might map.
func TestNormalizeEverySingleRune(t *testing.T) {
	if testing.Short() {
		t.Skip("walks all of Unicode")
	}
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if utf8.ValidRune(r) {
			checkInvariants(t, string(r))
			checkInvariants(t, "a"+string(r))
		}
	}
}

func TestNormalizeConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for _, typed := range []string{"Alice", "ＡＬＩＣＥ", "аdmin", "a♥b", "aא"} {
				_, _ = Normalize(typed)
			}
		})
	}
	wg.Wait()
}

func BenchmarkNormalize(b *testing.B) {
	inputs := []struct{ name, typed string }{
		{"ascii", "alice_smith"},
		{"mixed-case", "Alice_Smith"},
		{"fullwidth", "ＡＬＩＣＥ"},
		{"confusable", "аlice"},
		{"accented", "Zoë-Ångström"},
		{"rejected", "a♥b"},
	}
	for _, in := range inputs {
		b.Run(in.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = Normalize(in.typed)
			}
		})
	}
}
