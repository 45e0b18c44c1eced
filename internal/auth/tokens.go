// Package auth decides who may call the registry's HTTP API: callers named
// in a tokens file, each holding a bearer token and a set of scopes, and
// the rule that says which scope each route needs.
//
// The tokens file holds one caller a line:
//
//	# NAME     SCOPES        SHA256HEX
//	signup     claim,read    9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//	ops-tool   read,admin    60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752
//
// SCOPES is a comma-separated subset of claim, read and admin; SHA256HEX is
// the lowercase hex SHA-256 of the token, so the file never holds a token
// and a leaked copy grants nothing. '#' starts a comment; blank lines are
// ignored; anything else malformed is an error naming the line.
//
// A presented token is hashed, then compared with every stored hash in
// constant time (crypto/subtle), without stopping at a match, so the time
// taken says nothing about which caller, if any, matched. Tokens are never
// logged; only caller names are.
package auth

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync/atomic"
)

// Scope is a permission a caller holds.
type Scope string

// The scopes. Every route under /v1/ needs exactly one (see Rules).
const (
	ScopeClaim Scope = "claim" // write commands: POST /v1/claims, /v1/releases, /v1/renames
	ScopeRead  Scope = "read"  // GET routes under /v1/
	ScopeAdmin Scope = "admin" // anything under /v1/admin/
)

// Scopes lists every scope, in the order the file's documentation gives.
var Scopes = []Scope{ScopeClaim, ScopeRead, ScopeAdmin}

// Caller is one line of the tokens file.
type Caller struct {
	Name   string   // recorded on every command the caller writes; [A-Za-z0-9._-], at most 64 bytes
	Scopes []Scope  // what it may do; at least one, no repeats
	hash   [32]byte // SHA-256 of its token
}

// Has reports whether c holds s.
func (c *Caller) Has(s Scope) bool { return slices.Contains(c.Scopes, s) }

// Callers is a parsed tokens file. The zero value knows nobody.
type Callers struct {
	list []*Caller
}

// Len is how many callers the file names.
func (cs *Callers) Len() int { return len(cs.list) }

// Count is how many callers hold s.
func (cs *Callers) Count(s Scope) int {
	n := 0
	for _, c := range cs.list {
		if c.Has(s) {
			n++
		}
	}
	return n
}

// compare is subtle.ConstantTimeCompare; tests swap it to count calls.
var compare = subtle.ConstantTimeCompare

// Lookup returns the caller whose token is token, or nil. It hashes token
// and compares the hash with every caller's, in constant time and without
// returning early, so its timing does not depend on which caller matched.
func (cs *Callers) Lookup(token string) *Caller {
	sum := sha256.Sum256([]byte(token))
	var found *Caller
	for _, c := range cs.list {
		// Every entry is compared; the match is kept with a branch on a
		// result already computed, not a return.
		if compare(sum[:], c.hash[:]) == 1 && found == nil {
			found = c
		}
	}
	return found
}

// maxNameLen bounds caller names: they are written into every claim.
const maxNameLen = 64

// ParseError is a malformed line of a tokens file.
type ParseError struct {
	File string // as given to LoadFile; empty for Parse
	Line int    // 1-based
	Msg  string
}

func (e *ParseError) Error() string {
	if e.File == "" {
		return fmt.Sprintf("tokens file line %d: %s", e.Line, e.Msg)
	}
	return fmt.Sprintf("tokens file %s line %d: %s", e.File, e.Line, e.Msg)
}

// maxFileBytes bounds a tokens file: it is read whole on every reload.
const maxFileBytes = 4 << 20

// Parse reads a tokens file. A malformed line is a *ParseError; so are two
// lines with the same name or the same hash (one token must name one
// caller, and one name one token: rotate by giving the new token a new
// name, see docs/deployment.md).
func Parse(r io.Reader) (*Callers, error) {
	raw, err := io.ReadAll(io.LimitReader(r, maxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading tokens file: %w", err)
	}
	if len(raw) > maxFileBytes {
		return nil, fmt.Errorf("tokens file is larger than %d bytes", maxFileBytes)
	}
	cs := &Callers{}
	names := map[string]int{}
	hashes := map[[32]byte]int{}
	for i, line := range bytes.Split(raw, []byte("\n")) {
		n := i + 1
		c, err := parseLine(bytes.TrimSuffix(line, []byte("\r")))
		if err != nil {
			return nil, &ParseError{Line: n, Msg: err.Error()}
		}
		if c == nil {
			continue
		}
		if prev, ok := names[c.Name]; ok {
			return nil, &ParseError{Line: n, Msg: fmt.Sprintf("caller %q is already named on line %d", c.Name, prev)}
		}
		if prev, ok := hashes[c.hash]; ok {
			return nil, &ParseError{Line: n, Msg: fmt.Sprintf("the same token hash is already on line %d", prev)}
		}
		names[c.Name], hashes[c.hash] = n, n
		cs.list = append(cs.list, c)
	}
	return cs, nil
}

// parseLine parses one line; nil, nil for a blank or comment line.
func parseLine(line []byte) (*Caller, error) {
	if i := bytes.IndexByte(line, '#'); i >= 0 {
		line = line[:i]
	}
	fields := strings.Fields(string(line))
	switch {
	case len(fields) == 0:
		return nil, nil
	case len(fields) != 3:
		return nil, fmt.Errorf("want NAME SCOPES SHA256HEX, got %d fields", len(fields))
	}
	c := &Caller{Name: fields[0]}
	if err := checkName(c.Name); err != nil {
		return nil, err
	}
	scopes, err := parseScopes(fields[1])
	if err != nil {
		return nil, err
	}
	c.Scopes = scopes
	h := fields[2]
	if len(h) != 64 || strings.ToLower(h) != h {
		return nil, fmt.Errorf("hash must be 64 lowercase hex digits (the SHA-256 of the token, not the token), got %d characters", len(h))
	}
	if _, err := hex.Decode(c.hash[:], []byte(h)); err != nil {
		return nil, fmt.Errorf("hash is not hex: %v", err)
	}
	return c, nil
}

func checkName(name string) error {
	if len(name) > maxNameLen {
		return fmt.Errorf("caller name is longer than %d bytes", maxNameLen)
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
		if !ok {
			return errors.New("caller name may hold only letters, digits, '.', '_' and '-'")
		}
	}
	return nil
}

func parseScopes(s string) ([]Scope, error) {
	var out []Scope
	for _, part := range strings.Split(s, ",") {
		sc := Scope(part)
		if !slices.Contains(Scopes, sc) {
			// The text is not echoed: a token pasted into the wrong
			// column must not reach the log.
			return nil, errors.New("SCOPES must be a comma-separated subset of claim, read, admin")
		}
		if slices.Contains(out, sc) {
			return nil, fmt.Errorf("scope %q is listed twice", part)
		}
		out = append(out, sc)
	}
	return out, nil
}

// LoadFile reads and parses the tokens file at path.
func LoadFile(path string) (*Callers, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading tokens file: %w", err)
	}
	defer f.Close()
	cs, err := Parse(f)
	var pe *ParseError
	if errors.As(err, &pe) {
		pe.File = path
	}
	return cs, err
}

// HashToken is the SHA256HEX of token as the tokens file holds it.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// Store holds the callers in force and swaps them atomically on reload,
// so requests in flight keep the set they started with and none waits.
type Store struct {
	path string
	cur  atomic.Pointer[Callers]
}

// NewStore loads path; the error names the file and the malformed line.
func NewStore(path string) (*Store, error) {
	s := &Store{path: path}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Path is the file the store reads.
func (s *Store) Path() string { return s.path }

// Reload reads the file again. On error the callers in force stay.
func (s *Store) Reload() error {
	cs, err := LoadFile(s.path)
	if err != nil {
		return err
	}
	s.cur.Store(cs)
	return nil
}

// Callers is the set in force.
func (s *Store) Callers() *Callers { return s.cur.Load() }
