package username

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"go.mau.fi/util/confusable"
	"go.mau.fi/util/unicodeurls"
	"golang.org/x/text/cases"
	"golang.org/x/text/secure/precis"
	"golang.org/x/text/unicode/bidi"
	"golang.org/x/text/unicode/norm"
)

// outcome is what a new user claiming typed would get, given held names.
type outcome struct {
	kind  string   // the bug-report kind (docs/usernames.md)
	held  []string // names already held, by other users
	typed string
	// want: "ok" (registered), "invalid" (with detail containing
	// detail), "confusable" or "taken" (shares a held name's key), or
	// "reserved".
	want   string
	detail string
}

// decideNew mirrors the projector's rule for a new user: invalid, then
// reserved, then a held name with the same key.
func decideNew(t *testing.T, p *Policy, held []string, typed string) (string, string) {
	t.Helper()
	keys := map[string]string{}
	for _, h := range held {
		u, err := p.Normalize(h)
		if err != nil {
			t.Fatalf("held name %q is refused: %v", h, err)
		}
		keys[u.Key] = u.Canonical
	}
	u, err := p.Normalize(typed)
	switch {
	case err != nil:
		return "invalid", err.Error()
	case p.Reserved(u):
		return "reserved", ""
	case keys[u.Key] == u.Canonical:
		return "taken", u.Canonical
	case keys[u.Key] != "":
		return "confusable", keys[u.Key]
	}
	return "ok", u.Canonical
}

// bugReportKinds has each kind of the table with its example and
// more of the same kind. Every row is also run through the HTTP API by
// internal/stack's TestPolicyV2Table.
var bugReportKinds = []outcome{
	// The displayed form looks like another name.
	{"displayed", []string{"lumen11"}, "Iumen11", "invalid", "type the name as \"iumen11\""},
	{"displayed", nil, "iumen11", "ok", ""},
	{"displayed", nil, "ALICE", "invalid", "U+0049"},
	{"displayed", nil, "\uff21\uff2c\uff29\uff23\uff25", "invalid", "U+FF29"}, // fullwidth ＡＬＩＣＥ
	{"displayed", nil, "Alice", "ok", ""},
	{"displayed", []string{"bill"}, "BILL", "invalid", "U+0049"},
	{"displayed", nil, "\u13aa\u13b5\u13ac", "invalid", "U+13AA"}, // Cherokee capitals
	{"displayed", nil, "\u0399on", "invalid", ""},                 // Greek capital iota
	// A soft-dotted letter with U+0307.
	{"soft-dotted", []string{"pilot7"}, "P\u0130LOT7", "invalid", "U+0307"},
	{"soft-dotted", nil, "pi\u0307lot7", "invalid", "U+0307"},
	{"soft-dotted", nil, "j\u0307ane", "invalid", "U+0307"},
	{"soft-dotted", nil, "\u0456\u0307\u0432\u0430\u043d", "invalid", "U+0307"}, // Cyrillic і + dot
	{"soft-dotted", nil, "i\u0301n", "ok", ""},                                  // an accent, not a dot
	// Repeated, stacked or other-script marks.
	{"marks", []string{"zo\u00e9"}, "zoe\u0301\u0301", "invalid", "twice"},
	{"marks", nil, "zoe\u0301\u0323\u0301", "invalid", "twice"},
	{"marks", nil, "e\u0301\u0300\u0302\u0303\u0304x", "invalid", "more than 4"},
	{"marks", nil, "a\u093c", "invalid", "Devanagari"},
	{"marks", nil, "\u0915\u093c", "ok", ""}, // Devanagari nukta on a Devanagari letter
	// A digit whose prototype is a capital letter.
	{"digit", []string{"dog"}, "d0g", "confusable", "dog"},
	{"digit", nil, "r00t", "reserved", ""}, // root is reserved; 0 maps to O, which folds to o
	{"digit", []string{"o0o"}, "ooo", "confusable", "o0o"},
	{"digit", []string{"bob1"}, "bobl", "confusable", "bob1"},
	// Mixed-script lookalikes (restriction level).
	{"mixed-script", nil, "\u0430cmecorp", "invalid", "Cyrillic"},
	{"mixed-script", nil, "acmecorp", "ok", ""},
	{"mixed-script", nil, "p\u0430ypal", "invalid", "Cyrillic"},
	{"mixed-script", nil, "\u03bfpenai", "invalid", "Greek"},
	{"mixed-script", nil, "g\u0585\u0585gle", "invalid", "Armenian"},
	{"mixed-script", nil, "tokyo\u6771\u4eac", "ok", ""},
	{"mixed-script", nil, "abc\u3072\u3089\u304c\u306a\u6f22", "ok", ""},
	{"whole-script", []string{"cop"}, "\u0441\u043e\u0440", "invalid", "Cyrillic"},
	{"whole-script", nil, "\u0430\u0440\u0440\u04cf\u0435", "invalid", "Cyrillic"}, // аррӏе
	{"whole-script", nil, "\u0432\u0430\u0441\u044f", "ok", ""},
	{"whole-script", nil, "\u043c\u043e\u0441\u043a\u0432\u0430", "ok", ""},
	// Canonically equivalent input and the length limit.
	{"equivalent", []string{strings.Repeat("\uac01", 29)}, strings.Repeat("\u1100\u1161\u11a8", 29), "taken", ""},
	{"equivalent", nil, strings.Repeat("\u1100\u1161\u11a8", 64), "ok", ""},
	{"equivalent", nil, strings.Repeat("\u1100\u1161\u11a8", 65), "invalid", "longer than 64"},
	{"equivalent", nil, strings.Repeat("e\u0301", 64), "ok", ""},
	{"equivalent", nil, strings.Repeat("a", 65), "invalid", "longer than 64"},
	{"equivalent", nil, strings.Repeat("a", 5000), "invalid", "longer than 64"},
	// Paths.
	{"path", nil, "..", "invalid", "only of dots"},
	{"path", nil, ".", "invalid", "only of dots"},
	{"path", nil, "...", "invalid", "only of dots"},
	{"path", nil, ".well-known", "invalid", "begins with a dot"},
	{"path", nil, ".htaccess", "invalid", "begins with a dot"},
	{"path", nil, "\uff0e\uff0e", "invalid", "only of dots"}, // fullwidth dots
	{"path", nil, "a/b", "invalid", "'/'"},
	{"path", nil, "a\\b", "invalid", "'\\\\'"},
	{"path", nil, "a\uff0fb", "invalid", "'/'"}, // fullwidth solidus
	{"path", nil, "robots.txt", "reserved", ""},
	{"path", nil, "favicon.ico", "reserved", ""},
	{"path", nil, "sitemap.xml", "reserved", ""},
	{"path", nil, "R0B0TS.TXT", "reserved", ""},
	{"path", nil, "a.b", "ok", ""},
	// Escapes and URL delimiters: a site that decodes or cuts its paths
	// would read these as the refused or reserved names.
	{"path", nil, "%2e%2e", "invalid", "'%'"},
	{"path", nil, "%2ewell-known", "invalid", "'%'"},
	{"path", nil, "a%2Fb", "invalid", "'%'"},
	{"path", nil, "robots%2etxt", "invalid", "'%'"},
	{"path", nil, "%", "invalid", "'%'"},
	{"path", nil, "robots.txt?", "invalid", "'?'"},
	{"path", nil, "robots.txt#", "invalid", "'#'"},
	{"path", nil, "x?y", "invalid", "'?'"},
	{"path", nil, "x#y", "invalid", "'#'"},
	{"path", nil, "a[0]", "invalid", "'['"},
	{"path", nil, "a|b", "invalid", "'|'"},
	{"path", nil, "a<b>", "invalid", "'<'"},
	{"path", nil, "a\"b", "invalid", "'\"'"},
	{"path", nil, "a^b", "invalid", "'^'"},
	{"path", nil, "a`b", "invalid", "'`'"},
	{"path", nil, "a{b}", "invalid", "'{'"},
	{"path", nil, "a\uff05b", "invalid", "'%'"}, // fullwidth percent sign
	{"path", nil, "a-b_c~d", "ok", ""},
	{"path", nil, "a+b", "ok", ""},
	{"path", nil, "a@b:c", "ok", ""},
	{"path", nil, "alice.", "ok", ""},
	// The Bidi rule only for right-to-left names.
	{"bidi", nil, "jos\u00e9_", "ok", ""},
	{"bidi", nil, "\u00e9.", "ok", ""},
	{"bidi", nil, "1\u00e9", "ok", ""},
	{"bidi", nil, "\u05e9\u05dc\u05d5\u05dd", "ok", ""},
	{"bidi", nil, "a\u05d0", "invalid", "right-to-left"},
	{"bidi", nil, "\u05d0_", "invalid", "right-to-left"},
	// The lookup agrees with a claim.
	{"lookup", []string{"orchid5"}, "orch\u0456d5", "invalid", "Cyrillic"},
	{"lookup", []string{"orchid5"}, "0rchid5", "confusable", "orchid5"},
	{"lookup", []string{"orchid5"}, "Orchid5", "taken", ""},
}

func TestBugReportKinds(t *testing.T) {
	for _, c := range bugReportKinds {
		got, detail := decideNew(t, v2, c.held, c.typed)
		if got != c.want || (c.detail != "" && !strings.Contains(detail, c.detail)) {
			t.Errorf("%s: holding %q, a claim of %+q gets %s (%s); want %s (%s)", c.kind, c.held, c.typed, got, detail, c.want, c.detail)
		}
	}
}

// TestVersion1Frozen shows version 1 still answers as it did: the rows
// of the table that version 1 got wrong.
func TestVersion1Frozen(t *testing.T) {
	for _, c := range []struct {
		held  []string
		typed string
		want  string
	}{
		{[]string{"lumen11"}, "Iumen11", "ok"},
		{[]string{"pilot7"}, "P\u0130LOT7", "ok"},
		{[]string{"zo\u00e9"}, "zoe\u0301\u0301", "ok"},
		{[]string{"dog"}, "d0g", "ok"},
		{nil, "\u0430cmecorp", "ok"},
		{nil, strings.Repeat("\u1100\u1161\u11a8", 29), "invalid"},
		{nil, "..", "ok"},
		{nil, "jos\u00e9_", "invalid"},
		{[]string{"orchid5"}, "orch\u0456d5", "confusable"},
	} {
		if got, detail := decideNew(t, v1, c.held, c.typed); got != c.want {
			t.Errorf("version 1: holding %q, %+q gets %s (%s); want %s", c.held, c.typed, got, detail, c.want)
		}
	}
}

func TestForVersion(t *testing.T) {
	for v := 1; v <= Latest; v++ {
		if p, err := ForVersion(v); err != nil || p.Version() != v {
			t.Fatalf("ForVersion(%d) = %v, %v", v, p, err)
		}
	}
	for _, v := range []int{0, -1, Latest + 1} {
		if _, err := ForVersion(v); !errors.Is(err, ErrUnknownVersion) {
			t.Fatalf("ForVersion(%d) error %v; want ErrUnknownVersion", v, err)
		}
	}
}

// TestDataVersions pins the Unicode data the policy's outcomes depend on,
// so that an upgrade of Go, golang.org/x/text or go.mau.fi/util that
// changes them fails here instead of changing answers silently. Such an
// upgrade needs a new policy version (docs/usernames.md).
func TestDataVersions(t *testing.T) {
	for _, c := range []struct{ what, got, want string }{
		{"Go unicode tables", unicode.Version, "15.0.0"},
		{"x/text norm", norm.Version, "15.0.0"},
		{"x/text cases", cases.UnicodeVersion, "15.0.0"},
		{"x/text bidi", bidi.UnicodeVersion, "15.0.0"},
		{"x/text precis", precis.UnicodeVersion, "15.0.0"},
		{"Script_Extensions", ScriptExtensionsVersion, "15.0.0"},
		{"confusables.txt (go.mau.fi/util)", unicodeurls.UnicodeVersion, "17.0.0"},
		{"confusables table digest", confusablesDigest(), "pinned below"},
	} {
		want := c.want
		if c.what == "confusables table digest" {
			want = pinnedConfusablesDigest
		}
		if c.got != want {
			t.Errorf("%s: version %s; the policy was written for %s", c.what, c.got, want)
		}
	}
}

// pinnedConfusablesDigest is the SHA-256 of every code point's prototype
// in go.mau.fi/util/confusable v0.9.4 (confusables.txt of Unicode 17.0.0).
const pinnedConfusablesDigest = "2678e2331ca357ae441ef2df1e1e22cd1ff6f35aaa0de4c4c7bf0346aa8cabbb"

func confusablesDigest() string {
	h := sha256.New()
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if p := confusable.GetReplacement(r); p != "" {
			h.Write(utf8.AppendRune(nil, r))
			h.Write([]byte(p))
			h.Write([]byte{0})
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

func TestReservedLists(t *testing.T) {
	for _, p := range []*Policy{v1, v2} {
		seen := map[string]string{}
		for _, n := range p.ReservedNames() {
			u, err := p.Normalize(n)
			if err != nil || u.Canonical != n {
				t.Fatalf("version %d: reserved %q normalizes to %q, %v", p.Version(), n, u.Canonical, err)
			}
			if prev, dup := seen[u.Key]; dup {
				t.Fatalf("version %d: reserved %q and %q share a key", p.Version(), n, prev)
			}
			seen[u.Key] = n
			if !p.Reserved(u) {
				t.Fatalf("version %d: %q is not reserved", p.Version(), n)
			}
		}
	}
	if u, _ := v1.Normalize("robots.txt"); v1.Reserved(u) {
		t.Fatal("version 1 reserves robots.txt; its list is frozen")
	}
}

// TestEveryCodePoint checks the fuzz properties on every code point, alone
// and after "a" (under the race detector, after "a" for every seventh).
func TestEveryCodePoint(t *testing.T) {
	if testing.Short() {
		t.Skip("walks every code point")
	}
	const parts = 4
	for part := range rune(parts) {
		t.Run(fmt.Sprint(part), func(t *testing.T) {
			t.Parallel()
			for r := part; r <= unicode.MaxRune; r += parts {
				if utf8.ValidRune(r) {
					checkProperties(t, string(r))
					if !raceEnabled || r%7 == 0 {
						checkProperties(t, "a"+string(r))
					}
				}
			}
		})
	}
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
	for _, p := range []*Policy{v1, v2} {
		for _, in := range inputs {
			b.Run(fmt.Sprintf("v%d/%s", p.Version(), in.name), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					_, _ = p.Normalize(in.typed)
				}
			})
		}
	}
}

// TestASCIIShortcuts: the shortcuts for ASCII give what the general code
// gives, for every pair of printable ASCII characters.
func TestASCIIShortcuts(t *testing.T) {
	for a := byte(0x20); a < 0x7f; a++ {
		for b := byte(0x20); b < 0x7f; b++ {
			s := string([]byte{a, b})
			if got, want := asciiSkeleton(s), fullSkeleton(s); got != want {
				t.Fatalf("asciiSkeleton(%q) = %q; want %q", s, got, want)
			}
			if got, want := asciiLower(s), norm.NFD.String(fold(s)); got != want {
				t.Fatalf("asciiLower(%q) = %q; want %q", s, got, want)
			}
			if got, want := asciiScripts(s), resolvedScripts(s); got != want {
				t.Fatalf("asciiScripts(%q) = %v; want %v", s, got.names(), want.names())
			}
		}
	}
}

func resolvedScripts(s string) scriptSet {
	resolved := allScripts
	for _, r := range s {
		resolved = resolved.and(augment(scriptExtensions(r)))
	}
	return resolved
}
