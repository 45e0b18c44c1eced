package auth

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func line(name, scopes, token string) string {
	return name + " " + scopes + " " + HashToken(token) + "\n"
}

func TestParse(t *testing.T) {
	t.Parallel()
	file := "# callers\n\n" + line("signup", "claim,read", "s3cret") + "   \t\n" + line("ops", "admin", "root") + "# end\r\n"
	cs, err := Parse(strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if cs.Len() != 2 || cs.Count(ScopeClaim) != 1 || cs.Count(ScopeAdmin) != 1 {
		t.Fatalf("parsed %d callers, %d claim, %d admin", cs.Len(), cs.Count(ScopeClaim), cs.Count(ScopeAdmin))
	}
	c := cs.Lookup("s3cret")
	if c == nil || c.Name != "signup" || !c.Has(ScopeClaim) || !c.Has(ScopeRead) || c.Has(ScopeAdmin) {
		t.Errorf("lookup s3cret: %+v", c)
	}
	if c := cs.Lookup("root"); c == nil || c.Name != "ops" {
		t.Errorf("lookup root: %+v", c)
	}
	for _, tok := range []string{"", "s3cre", "s3cret ", HashToken("s3cret")} {
		if c := cs.Lookup(tok); c != nil {
			t.Errorf("lookup %q found %s", tok, c.Name)
		}
	}
}

func TestParseMalformed(t *testing.T) {
	t.Parallel()
	h := HashToken("x")
	cases := []struct{ file, want string }{
		{"a claim\n", "line 1: want NAME SCOPES SHA256HEX, got 2 fields"},
		{"# ok\na claim " + h + " extra\n", "line 2: want NAME SCOPES SHA256HEX, got 4 fields"},
		{"a write " + h, "line 1: SCOPES must be"},
		{"a claim,claim " + h, "line 1: scope \"claim\" is listed twice"},
		{"a claim, " + h, "line 1: SCOPES must be"},
		{"a Claim " + h, "line 1: SCOPES must be"},
		{"a claim " + strings.ToUpper(h), "line 1: hash must be 64 lowercase hex digits"},
		{"a claim " + h[:63], "line 1: hash must be 64 lowercase hex digits"},
		{"a claim " + h[:63] + "g", "line 1: hash is not hex"},
		{"a claim plaintext-token", "line 1: hash must be"},
		{"al/ice claim " + h, "line 1: caller name may hold only"},
		{strings.Repeat("n", 65) + " claim " + h, "line 1: caller name is longer than 64 bytes"},
		{"a claim " + h + "\n\nb read " + h, "line 3: the same token hash is already on line 1"},
		{"a claim " + h + "\na read " + HashToken("y"), "line 2: caller \"a\" is already named on line 1"},
	}
	for _, c := range cases {
		_, err := Parse(strings.NewReader(c.file))
		var pe *ParseError
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want a ParseError containing %q", c.file, err, c.want)
		}
	}
}

// TestParseNeverEchoesAToken: a token pasted into the wrong column must not
// appear in the error, which is printed and logged.
func TestParseNeverEchoesAToken(t *testing.T) {
	t.Parallel()
	const tok = "tok_live_do_not_print"
	for _, file := range []string{
		"signup " + tok + " " + HashToken("x"),
		"signup claim " + tok,
		tok + " claim",
		"signup claim,read," + tok + " " + HashToken("x"),
	} {
		_, err := Parse(strings.NewReader(file))
		if err == nil || strings.Contains(err.Error(), tok) {
			t.Errorf("%q: error %v carries the token", file, err)
		}
	}
}

// TestLookupComparesEveryEntry: the comparison does not return early, so
// its time does not depend on which caller (if any) matched.
func TestLookupComparesEveryEntry(t *testing.T) {
	var file strings.Builder
	for i := range 50 {
		file.WriteString(line("c"+string(rune('a'+i%26))+string(rune('a'+i/26)), "claim", "t"+string(rune(i+'0'))))
	}
	cs, err := Parse(strings.NewReader(file.String()))
	if err != nil {
		t.Fatal(err)
	}
	orig := compare
	defer func() { compare = orig }()
	calls := 0
	compare = func(a, b []byte) int { calls++; return orig(a, b) }
	for _, tok := range []string{"t0", "t" + string(rune(49+'0')), "unknown"} {
		calls = 0
		cs.Lookup(tok)
		if calls != cs.Len() {
			t.Errorf("lookup %q compared %d of %d hashes", tok, calls, cs.Len())
		}
	}
	if c := cs.Lookup("t0"); c == nil || c.Name != "caa" {
		t.Errorf("first caller: %+v", c)
	}
}

func TestStoreReload(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "tokens")
	write := func(s string) {
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(line("old", "claim", "one"))
	s, err := NewStore(p)
	if err != nil {
		t.Fatal(err)
	}
	write(line("new", "claim", "two"))
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if s.Callers().Lookup("one") != nil || s.Callers().Lookup("two") == nil {
		t.Error("reload did not swap the callers")
	}
	write("broken line\n")
	if err := s.Reload(); err == nil || !strings.Contains(err.Error(), p+" line 1") {
		t.Errorf("reload of a broken file: %v", err)
	}
	if s.Callers().Lookup("two") == nil {
		t.Error("a failed reload dropped the callers in force")
	}
}

func TestShareOf(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ max, n, want int }{{10000, 1, 10000}, {10000, 0, 10000}, {10000, 3, 3334}, {1, 5, 1}, {10, 4, 3}} {
		if got := ShareOf(c.max, c.n); got != c.want {
			t.Errorf("ShareOf(%d, %d) = %d, want %d", c.max, c.n, got, c.want)
		}
	}
}
