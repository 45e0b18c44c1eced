// Package username is the registry's username policy: normalize what a
// person typed, validate it, and derive the partition key. Every version
// of the policy lives here, the old ones frozen, because a registry keeps
// deciding under the version its data was made with (docs/usernames.md,
// docs/design.md "Policy version pinning"). The projector imports this
// package without the API.
//
// Version 1 (package internal/policyv1) is PRECIS UsernameCaseMapped and
// the UTS #39 skeleton of the lowercase form. Version 2 adds what version 1
// let through: the key covers the form as typed, the UTS #39 restriction
// level, whole-script and mixed-script confusables and the mark checks,
// path-safe names, the Bidi rule only for right-to-left names, and a length
// rule that gives canonically equivalent inputs the same answer.
package username

import (
	"errors"
	"fmt"

	"github.com/usernameregistry/registry/claims/username/internal/policyv1"
)

// Latest is the policy version a new registry starts with.
const Latest = 2

// Username is a username after the policy: as typed, canonical form, and
// partition key.
type Username struct {
	Typed     string // as the user typed it; what is displayed
	Canonical string // the one official spelling (PRECIS UsernameCaseMapped, RFC 8265)
	Key       string // the confusable key: equal for names that look alike; the Kafka record key
}

// ErrInvalid is wrapped by every policy rejection (errors.Is(err, ErrInvalid)).
var ErrInvalid = errors.New("invalid username")

// ErrUnknownVersion is wrapped when a policy version is asked for that
// this build does not have.
var ErrUnknownVersion = errors.New("unknown username policy version")

// InvalidError carries a reason a person understands. Error returns just
// the Detail so it can be shown to the person who typed the name.
type InvalidError struct{ Detail string }

func (e *InvalidError) Error() string { return e.Detail }

// Unwrap lets errors.Is(err, ErrInvalid) match every rejection.
func (e *InvalidError) Unwrap() error { return ErrInvalid }

// invalid builds a rejection with a formatted, human-readable detail.
func invalid(format string, args ...any) error {
	return &InvalidError{Detail: fmt.Sprintf(format, args...)}
}

// Policy is one version of the username policy. It is safe for concurrent
// use.
type Policy struct {
	version   int
	normalize func(typed string) (Username, error)
	inspect   func(typed string) (Username, bool)
	shownKey  func(typed string) (string, bool)
	reserved  map[string]string // Key -> reserved name
	names     []string
}

// Version is the policy's number, as recorded in claims and decisions.
func (p *Policy) Version() int { return p.version }

// Normalize applies the policy to what a person typed. It returns the
// canonical form and key, or an error wrapping ErrInvalid whose Error() is
// a sentence for that person.
func (p *Policy) Normalize(typed string) (Username, error) { return p.normalize(typed) }

// Reserved reports whether u (a result of this policy's Normalize) is on
// the policy's reserved list, compared by Key, so every spelling that
// looks like a reserved name is reserved too.
func (p *Policy) Reserved(u Username) bool {
	_, ok := p.reserved[u.Key]
	return ok
}

// Inspect returns the canonical form and key of typed where the policy can
// compute them although it refuses the name (ok is false when it cannot:
// characters that are not allowed, a name too long). It explains a
// refusal, for example that a mixed-script name looks like a held one; it
// never decides anything.
func (p *Policy) Inspect(typed string) (u Username, ok bool) { return p.inspect(typed) }

// ShownKey returns the key of typed as it is displayed (as typed, not
// canonical), where it can be computed. Version 2 refuses a name whose
// shown key differs from its key; the lookup uses it to name the held name
// such a name looks like. Version 1 has no such notion and returns Key.
func (p *Policy) ShownKey(typed string) (string, bool) { return p.shownKey(typed) }

// ReservedNames lists the reserved names in their canonical form.
func (p *Policy) ReservedNames() []string { return append([]string(nil), p.names...) }

var (
	v1 = &Policy{version: 1, normalize: normalizeV1, inspect: inspectV1, shownKey: shownKeyV1}
	v2 = &Policy{version: 2, normalize: normalizeV2, inspect: inspectV2, shownKey: shownKeyV2}
)

func init() {
	v1.names = policyv1.ReservedNames()
	v1.reserved = buildReserved(v1, v1.names)
	v2.names = reservedV2()
	v2.reserved = buildReserved(v2, v2.names)
}

// ForVersion returns the policy of the given version, or an error wrapping
// ErrUnknownVersion.
func ForVersion(version int) (*Policy, error) {
	switch version {
	case 1:
		return v1, nil
	case 2:
		return v2, nil
	}
	return nil, fmt.Errorf("%w %d: this build has versions 1 to %d", ErrUnknownVersion, version, Latest)
}

// MustVersion is ForVersion for versions known to exist; it panics on
// another.
func MustVersion(version int) *Policy {
	p, err := ForVersion(version)
	if err != nil {
		panic(err)
	}
	return p
}

// Normalize applies the latest policy, the one a new registry starts
// with. A registry whose data was made under an older version decides
// under that one: use ForVersion with its recorded version.
func Normalize(typed string) (Username, error) { return v2.Normalize(typed) }

// Reserved reports whether u is reserved under the latest policy.
func Reserved(u Username) bool { return v2.Reserved(u) }

// normalizeV1 runs the frozen version 1 and carries its rejections over
// into this package's error type.
func normalizeV1(typed string) (Username, error) {
	u, err := policyv1.Normalize(typed)
	if err != nil {
		var ie *policyv1.InvalidError
		if errors.As(err, &ie) {
			return Username{}, &InvalidError{Detail: ie.Detail}
		}
		return Username{}, &InvalidError{Detail: err.Error()}
	}
	return Username{Typed: u.Typed, Canonical: u.Canonical, Key: u.Key}, nil
}

func inspectV1(typed string) (Username, bool) {
	u, err := normalizeV1(typed)
	return u, err == nil
}

func shownKeyV1(typed string) (string, bool) {
	u, ok := inspectV1(typed)
	return u.Key, ok
}

// buildReserved panics on a name the policy rejects: that is a bug in the
// list, and a silently skipped entry would leave a name unreserved.
func buildReserved(p *Policy, names []string) map[string]string {
	keys := make(map[string]string, len(names))
	for _, name := range names {
		u, err := p.Normalize(name)
		if err != nil {
			panic(fmt.Sprintf("username: reserved name %q of version %d: %v", name, p.version, err))
		}
		keys[u.Key] = name
	}
	return keys
}
