// Package policyv1 is username policy version 1, frozen as it was when
// version 2 replaced it (see package username, which selects a version).
package policyv1

import (
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"

	"go.mau.fi/util/confusable"
	"golang.org/x/text/cases"
	"golang.org/x/text/language"
	"golang.org/x/text/secure/bidirule"
	"golang.org/x/text/secure/precis"
	"golang.org/x/text/unicode/bidi"
	"golang.org/x/text/unicode/norm"
	"golang.org/x/text/width"
)

// PolicyVersion is the version this package implements. It is frozen:
// registries whose data was decided under version 1 keep deciding with
// exactly this code, so no rule, limit, message or reserved name here may
// change (a replay of a version-1 log must give its decisions back byte
// for byte; see projector's TestReplayV1Log).
const PolicyVersion = 1

// Policy limits. The byte limit is a cheap guard so PRECIS never runs on
// arbitrarily large input; 256 bytes is exactly 64 runes of at most 4 bytes.
const (
	MaxRawBytes = 256
	MaxRunes    = 64
	// maxPasses bounds the PRECIS fixed-point loop: one pass normally
	// suffices and the next pass confirms it.
	maxPasses = 4
)

// Username is a username after the policy: as typed, canonical form, and partition key.
type Username struct {
	Typed     string // as the user typed it
	Canonical string // PRECIS UsernameCaseMapped (RFC 8265), applied until stable
	Key       string // UTS #39 confusable skeleton of Canonical; the Kafka record key
}

// ErrInvalid is wrapped by every policy rejection (errors.Is(err, ErrInvalid)).
var ErrInvalid = errors.New("invalid username")

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

// Normalize applies the username policy to what a person typed. It returns
// the canonical form and partition key, or an error wrapping ErrInvalid.
func Normalize(typed string) (Username, error) {
	if err := checkRaw(typed); err != nil {
		return Username{}, err
	}
	canonical, err := canonicalize(typed)
	if err != nil {
		return Username{}, err
	}
	key, err := keyOf(canonical)
	if err != nil {
		return Username{}, err
	}
	return Username{Typed: typed, Canonical: canonical, Key: key}, nil
}

// checkRaw rejects obviously bad input before PRECIS, so the common
// mistakes get precise messages instead of a generic "not allowed".
func checkRaw(typed string) error {
	switch {
	case typed == "":
		return invalid("username is empty")
	case len(typed) > MaxRawBytes:
		return invalid("username is too long (more than %d bytes as typed)", MaxRawBytes)
	case !utf8.ValidString(typed):
		return invalid("username is not valid UTF-8")
	}
	for _, r := range typed {
		if err := checkRawRune(r); err != nil {
			return err
		}
	}
	return nil
}

// checkRawRune tests whitespace before control characters because tab and
// newline are both, and "whitespace" is what a person recognises.
func checkRawRune(r rune) error {
	switch {
	case r == ' ':
		return invalid("username contains a space")
	case unicode.IsSpace(r):
		return invalid("username contains whitespace (%U)", r)
	case unicode.IsControl(r):
		return invalid("username contains a control character (%U)", r)
	}
	return nil
}

// canonicalize applies UsernameCaseMapped until the output stops changing,
// so the canonical form is a fixed point: normalizing it again is a no-op.
func canonicalize(typed string) (string, error) {
	cur := typed
	for range maxPasses {
		next, err := precis.UsernameCaseMapped.String(cur)
		if err != nil {
			return "", explainPRECIS(cur, err)
		}
		if next == cur {
			return cur, checkLength(cur)
		}
		cur = next
	}
	return "", invalid("username does not settle on a single canonical form")
}

// checkLength counts runes of the canonical form, which is what is stored
// and shown, rather than of the typed input.
func checkLength(canonical string) error {
	n := utf8.RuneCountInString(canonical)
	switch {
	case n == 0:
		return invalid("username is empty after normalization")
	case n > MaxRunes:
		return invalid("username is longer than %d characters", MaxRunes)
	}
	return nil
}

// keyOf derives the partition key. The skeleton is never displayed, so it
// may hold characters PRECIS would reject; it only has to be usable as a key.
func keyOf(canonical string) (string, error) {
	key := confusable.Skeleton(canonical)
	if key == "" || !utf8.ValidString(key) {
		return "", invalid("username has no usable registry key")
	}
	return key, nil
}

// lowerNoSigma mirrors the case mapping of UsernameCaseMapped; it is
// stateless, so one value can be shared between goroutines.
var lowerNoSigma = cases.Lower(language.Und, cases.HandleFinalSigma(false))

// explainPRECIS turns a PRECIS error, whose text means little to a person,
// into a rejection that names the problem and, where possible, the rune.
// PRECIS checks the Bidi rule before the character class, so a disallowed
// rune is looked for first: it is the more useful thing to tell someone.
func explainPRECIS(input string, err error) error {
	if r, ok := firstDisallowed(input); ok {
		return disallowedRune(r)
	}
	if errors.Is(err, bidirule.ErrInvalid) {
		return bidiError(input)
	}
	if r, ok := firstContextual(input); ok {
		return contextualRune(r)
	}
	return invalid("username contains characters that are not allowed in usernames")
}

// bidiError explains RFC 5893's Bidi rule. x/text applies it to every
// non-ASCII name, not only right-to-left ones (golang/go#17383), so "é_"
// fails although "e_" passes; the message says what to change.
func bidiError(input string) error {
	if bidirule.DirectionString(input) == bidi.RightToLeft {
		return invalid("username with right-to-left letters must start with a right-to-left letter, " +
			"end with a right-to-left letter or a digit, and must not contain left-to-right letters")
	}
	return invalid("username with non-ASCII characters must start with a letter and end with a letter or a digit")
}

// disallowedRune names invisible characters as such, since a person cannot
// see them in what they typed.
func disallowedRune(r rune) error {
	if unicode.Is(unicode.Cf, r) {
		return invalid("username contains an invisible formatting character (%U)", r)
	}
	return invalid("username contains a character that is not allowed in usernames (%U)", r)
}

// firstDisallowed finds a rune that PRECIS rejects. It prefers a rune as
// typed, mapped on its own the way the profile maps it (so fullwidth letters,
// allowed only after width folding, are not blamed), and otherwise looks at
// the whole mapped name, because composition can create a disallowed rune
// from allowed ones: "<" followed by U+0338 composes to "≮" (U+226E).
func firstDisallowed(input string) (rune, bool) {
	for _, r := range input {
		if !allAllowed(mapRune(r)) {
			return r, true
		}
	}
	for _, r := range mapString(input) {
		if !allAllowed(string(r)) {
			return r, true
		}
	}
	return 0, false
}

// allAllowed reports whether every rune of s is in the profile's class.
// Contextual runes are left to contextualRune, which explains them better.
func allAllowed(s string) bool {
	allowed := precis.UsernameCaseMapped.Allowed()
	for _, r := range s {
		if !isContextual(r) && !allowed.Contains(r) {
			return false
		}
	}
	return true
}

// mapRune applies the profile's width, case and normalization mappings to r.
func mapRune(r rune) string { return mapString(string(r)) }

// mapString applies the profile's mappings in the order RFC 8264 gives.
func mapString(s string) string {
	return norm.NFC.String(lowerNoSigma.String(width.Fold.String(s)))
}

// firstContextual finds a rune that RFC 5892 only allows in certain
// contexts (joiners, middle dots, geresh, mixed Arabic-Indic digits).
func firstContextual(input string) (rune, bool) {
	for _, r := range input {
		if isContextual(r) {
			return r, true
		}
	}
	return 0, false
}

// contextualRune names joiners as invisible, since a person cannot see them.
func contextualRune(r rune) error {
	if unicode.Is(unicode.Cf, r) {
		return invalid("username contains an invisible joining character (%U) where it is not allowed", r)
	}
	return invalid("username uses %U in a position or combination that is not allowed", r)
}

// isContextual lists the CONTEXTJ and CONTEXTO runes of RFC 5892 Appendix A.
func isContextual(r rune) bool {
	switch r {
	case 0x200C, 0x200D, 0x00B7, 0x0375, 0x05F3, 0x05F4, 0x30FB:
		return true
	}
	return (r >= 0x0660 && r <= 0x0669) || (r >= 0x06F0 && r <= 0x06F9)
}
