package auth

import (
	"strings"
	"testing"
)

// FuzzParse: any input parses or fails with a ParseError, never panics;
// what parses has valid names and scopes and looks up by its own hashes.
func FuzzParse(f *testing.F) {
	f.Add("# c\n" + line("signup", "claim,read", "x"))
	f.Add(line("a", "admin", "y") + line("b", "read", "z"))
	f.Add("a claim " + strings.Repeat("0", 64))
	f.Add("a\tclaim,read,admin\t" + strings.Repeat("f", 64) + " # comment\r\n")
	f.Add("a claim,,read " + strings.Repeat("a", 64))
	f.Add("\xff claim " + strings.Repeat("a", 64))
	f.Fuzz(func(t *testing.T, file string) {
		cs, err := Parse(strings.NewReader(file))
		if err != nil {
			if _, ok := err.(*ParseError); !ok && !strings.Contains(err.Error(), "larger than") {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		names := map[string]bool{}
		for _, c := range cs.list {
			if c.Name == "" || len(c.Name) > maxNameLen || names[c.Name] || len(c.Scopes) == 0 {
				t.Fatalf("bad caller %+v", c)
			}
			names[c.Name] = true
			if checkName(c.Name) != nil {
				t.Fatalf("name %q passed", c.Name)
			}
		}
	})
}
