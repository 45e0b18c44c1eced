package username

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"go.mau.fi/util/confusable"
	"golang.org/x/text/cases"
	"golang.org/x/text/language"
	"golang.org/x/text/secure/bidirule"
	"golang.org/x/text/secure/precis"
	"golang.org/x/text/unicode/bidi"
	"golang.org/x/text/unicode/norm"
	"golang.org/x/text/unicode/rangetable"
	"golang.org/x/text/width"
)

// Limits of version 2.
const (
	// MaxRunes is the most characters (code points) a canonical form may
	// have.
	MaxRunes = 64
	// MaxRawBytes is a cheap guard so PRECIS never runs on arbitrarily
	// large input. It is sized for decomposed input, so that it never
	// refuses a spelling of a name whose canonical form fits: a canonical
	// character decomposes into at most 4 code points (UAX #15 §9, NFD
	// expansion), each at most 4 bytes, and width and case variants can
	// take more bytes again, hence 64 × 4 × 4 × 2.
	MaxRawBytes = 2048
	// maxPasses bounds the PRECIS fixed-point loop: one pass normally
	// suffices and the next pass confirms it.
	maxPasses = 4
	// maxKeyPasses bounds the key's skeleton-and-fold loop; two passes
	// normally reach the fixed point.
	maxKeyPasses = 8
	// maxMarks is the longest run of nonspacing marks UTS #39 §5.4 allows.
	maxMarks = 4
)

// profileV2 is PRECIS UsernameCaseMapped (RFC 8265 §3.3) without its Bidi
// rule, which normalizeV2 applies itself, only to names with right-to-left
// characters: x/text applies it to every non-ASCII name (golang/go#17383).
var profileV2 = precis.NewIdentifier(precis.FoldWidth, precis.LowerCase(), precis.Norm(norm.NFC))

// Stateless transformers, safe to share between goroutines.
var (
	foldCase     = cases.Fold()
	lowerNoSigma = cases.Lower(language.Und, cases.HandleFinalSigma(false))
)

// defaultIgnorable is Default_Ignorable_Code_Point (UAX #44), which the
// UTS #39 skeleton removes.
var defaultIgnorable = func() *unicode.RangeTable {
	var rs []rune
	for _, r := range defaultIgnorableRanges {
		for c := r[0]; c <= r[1]; c++ {
			rs = append(rs, c)
		}
	}
	return rangetable.New(rs...)
}()

// normalizeV2 is version 2 of the policy (docs/usernames.md). Every check
// after the first ones runs on the NFC form of the input or on the
// canonical form, so canonically equivalent inputs get the same answer.
func normalizeV2(typed string) (Username, error) {
	if err := checkRawV2(typed); err != nil {
		return Username{}, err
	}
	nfc := norm.NFC.String(typed)
	canonical, err := canonicalizeV2(nfc)
	if err != nil {
		return Username{}, err
	}
	for _, check := range []func(string) error{checkLengthV2, checkPath, checkBidi, checkMarks} {
		if err := check(canonical); err != nil {
			return Username{}, err
		}
	}
	resolved, err := checkScripts(canonical)
	if err != nil {
		return Username{}, err
	}
	key, err := keyOf(canonical)
	if err != nil {
		return Username{}, err
	}
	if err := checkWholeScript(canonical, resolved, key); err != nil {
		return Username{}, err
	}
	if err := checkDisplayed(nfc, canonical, key); err != nil {
		return Username{}, err
	}
	return Username{Typed: typed, Canonical: canonical, Key: key}, nil
}

// inspectV2 computes the canonical form and key as normalizeV2 does,
// without the checks that do not stand in their way.
func inspectV2(typed string) (Username, bool) {
	if checkRawV2(typed) != nil {
		return Username{}, false
	}
	canonical, err := canonicalizeV2(norm.NFC.String(typed))
	if err != nil || checkLengthV2(canonical) != nil {
		return Username{}, false
	}
	key, err := keyOf(canonical)
	if err != nil {
		return Username{}, false
	}
	return Username{Typed: typed, Canonical: canonical, Key: key}, true
}

// shownKeyV2 is the key of the name as typed (in NFC).
func shownKeyV2(typed string) (string, bool) {
	if checkRawV2(typed) != nil {
		return "", false
	}
	key, err := keyOf(norm.NFC.String(typed))
	return key, err == nil
}

// errTooLong is the one message for a name too long, whether the byte
// guard or the character count finds it, so spellings of one name get one
// answer.
func errTooLong() error { return invalid("username is longer than %d characters", MaxRunes) }

// checkRawV2 rejects obviously bad input before PRECIS, so the common
// mistakes get precise messages instead of a generic "not allowed".
func checkRawV2(typed string) error {
	switch {
	case typed == "":
		return invalid("username is empty")
	case len(typed) > MaxRawBytes:
		return errTooLong()
	case !utf8.ValidString(typed):
		return invalid("username is not valid UTF-8")
	}
	for _, r := range typed {
		switch {
		case r == ' ':
			return invalid("username contains a space")
		case unicode.IsSpace(r):
			return invalid("username contains whitespace (%U)", r)
		case unicode.IsControl(r):
			return invalid("username contains a control character (%U)", r)
		}
	}
	return nil
}

// canonicalizeV2 applies the profile until the output stops changing, so
// the canonical form is a fixed point: normalizing it again is a no-op.
func canonicalizeV2(s string) (string, error) {
	cur := s
	for range maxPasses {
		next, err := profileV2.String(cur)
		if err != nil {
			return "", explainPRECIS(cur)
		}
		if next == cur {
			return cur, nil
		}
		cur = next
	}
	return "", invalid("username does not settle on a single canonical form")
}

// checkLengthV2 counts the characters of the canonical form, which is what
// is stored and shown, rather than bytes of the input.
func checkLengthV2(canonical string) error {
	if utf8.RuneCountInString(canonical) > MaxRunes {
		return errTooLong()
	}
	return nil
}

// checkPath keeps names usable as one segment of a web address
// (RFC 3986 §3.3): no dot segments or hidden names, and no ASCII character
// that a segment cannot carry as it is. A segment's characters are pchar:
// unreserved, sub-delims, ":" and "@", or a percent-encoded octet; so "/",
// "?", "#" and "[" "]" end or break the segment, "%" starts an escape (a
// site that decodes its paths would read "%2e%2e" as ".."), and the rest of
// ASCII punctuation (space, `"`, "<", ">", "\", "^", "`", "{", "|", "}")
// must always be escaped. A name that needs no escaping reads the same
// wherever a site puts it into a URL, escaped or not.
func checkPath(canonical string) error {
	switch {
	case strings.Trim(canonical, ".") == "":
		return invalid("username is made only of dots, which web addresses read as a step up or a stay in place")
	case canonical[0] == '.':
		return invalid("username begins with a dot, which marks hidden files and web paths such as .well-known")
	}
	if i := strings.IndexFunc(canonical, notPathChar); i >= 0 {
		r, _ := utf8.DecodeRuneInString(canonical[i:])
		switch r {
		case '/', '\\':
			return invalid("username contains %q, which separates the parts of a web address", r)
		default:
			return invalid("username contains %q, which a web address cannot carry unescaped (RFC 3986 §3.3); "+
				"besides letters and digits a name may use - . _ ~ ! $ & ' ( ) * + , ; = : @", r)
		}
	}
	return nil
}

// notPathChar reports an ASCII character outside RFC 3986's pchar (without
// the percent-encoding it allows). Non-ASCII characters are the other
// rules' business: IRIs (RFC 3987) carry them.
func notPathChar(r rune) bool {
	switch {
	case r >= utf8.RuneSelf:
		return false
	case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
		return false
	}
	return !strings.ContainsRune("-._~!$&'()*+,;=:@", r)
}

// checkBidi applies RFC 5893's Bidi rule to names with right-to-left
// characters (bidi class R, AL or AN), as RFC 8265 §3.3.3 (rule 6) asks,
// and only to them.
func checkBidi(canonical string) error {
	if bidirule.DirectionString(canonical) != bidi.RightToLeft || bidirule.ValidString(canonical) {
		return nil
	}
	return invalid("username with right-to-left letters must start with a right-to-left letter, " +
		"end with a right-to-left letter or a digit, and must not contain left-to-right letters")
}

// isMark reports the nonspacing and enclosing marks (gc=Mn, Me) that UTS
// #39 §5.4 counts.
func isMark(r rune) bool { return unicode.In(r, unicode.Mn, unicode.Me) }

// checkMarks applies UTS #39 §5.4 to the decomposed canonical form: no
// mark twice on one base, at most four marks in a row, no U+0307 dot above
// on a soft-dotted letter (i, j, і, …) that already shows a dot, and no
// nonspacing mark of a script other than its base's (or Inherited).
func checkMarks(canonical string) error {
	if isASCII(canonical) {
		return nil
	}
	var base rune
	var baseScripts scriptSet
	var marks []rune // marks on the current base
	dotted := false  // the base is soft-dotted and no other mark above came between
	for _, r := range norm.NFD.String(canonical) {
		if !isMark(r) {
			base, baseScripts, marks = r, scriptExtensions(r), marks[:0]
			dotted = unicode.Is(unicode.Soft_Dotted, r)
			continue
		}
		switch {
		case len(marks) == maxMarks:
			return invalid("username has more than %d combining marks in a row", maxMarks)
		case containsRune(marks, r):
			return invalid("username has the combining mark %U twice on one letter", r)
		case r == 0x0307 && dotted:
			return invalid("username puts a dot above (U+0307) on %q, which already has a dot, so it looks like %q alone "+
				"(a capital İ lowercases this way); type %q without the extra dot", base, base, base)
		}
		if s := scriptExtensions(r); unicode.Is(unicode.Mn, r) && !s.all() && !baseScripts.all() && s.and(baseScripts).empty() {
			return invalid("username puts the %s mark %U on a letter of another script (%q, %U)", strings.Join(s.names(), "/"), r, base, base)
		}
		if norm.NFD.PropertiesString(string(r)).CCC() == 230 {
			dotted = false // another mark above now sits between the letter and a later dot
		}
		marks = append(marks, r)
	}
	return nil
}

func containsRune(rs []rune, r rune) bool {
	for _, x := range rs {
		if x == r {
			return true
		}
	}
	return false
}

// checkScripts applies UTS #39 §5.2 at the Moderately Restrictive level,
// with Script_Extensions and Common and Inherited counted as every script
// (§5.1), and refuses a mixed-script name where a letter of the other
// script looks like a Latin letter (a mixed-script confusable, §4). It
// returns the name's resolved script set (every script when the name has
// only Common and Inherited characters).
func checkScripts(canonical string) (scriptSet, error) {
	if isASCII(canonical) {
		return asciiScripts(canonical), nil
	}
	var buf [MaxRunes]scriptSet
	sets := buf[:0]
	resolved := allScripts
	for _, r := range canonical {
		s := scriptExtensions(r)
		sets = append(sets, s)
		resolved = resolved.and(augment(s))
	}
	if !resolved.empty() {
		return resolved, nil // a single script
	}
	if !allowedMix(sets) {
		return resolved, mixedScripts(canonical)
	}
	return resolved, mixedLookalike(canonical)
}

var latinOnly = setOf("Latin")

// asciiScripts is the resolved script set of an ASCII name: Latin when it
// has a letter, else every script (digits and punctuation are Common).
func asciiScripts(s string) scriptSet {
	for i := 0; i < len(s); i++ {
		if c := s[i] | 0x20; 'a' <= c && c <= 'z' {
			return latinOnly
		}
	}
	return allScripts
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// allowedMix reports whether the scripts of a multi-script name are a
// combination UTS #39 §5.2 allows at Moderately Restrictive: Latin with
// Han and Hiragana and Katakana, with Han and Bopomofo, with Han and
// Hangul, or with any one other Recommended script but Cyrillic and Greek.
func allowedMix(sets []scriptSet) bool {
	for _, cover := range highlyRestrictive {
		if covered(sets, cover) {
			return true
		}
	}
	var latinSet scriptSet
	latinSet.add(latin)
	others := recommended
	for _, n := range []string{"Latin", "Cyrillic", "Greek"} {
		others[scriptIDs[n]/64] &^= 1 << (scriptIDs[n] % 64)
	}
	for _, s := range sets {
		if s.all() || s.has(latin) {
			continue
		}
		for _, n := range s.and(others).names() {
			cover := latinSet
			cover.add(scriptIDs[n])
			if covered(sets, cover) {
				return true
			}
		}
		return false // the first non-Latin letter decides which script is the other one
	}
	return true
}

// mixedScripts explains a refused mix: it names the scripts and the first
// letter that is not Latin.
func mixedScripts(canonical string) error {
	var names []string
	var first rune = -1
	for _, r := range canonical {
		s := scriptExtensions(r)
		if s.all() {
			continue
		}
		n := s.names()[0]
		if s.has(latin) {
			n = "Latin"
		} else if first < 0 {
			first = r
		}
		if !containsString(names, n) {
			names = append(names, n)
		}
	}
	detail := "username mixes the " + strings.Join(names, " and ") + " scripts"
	if first >= 0 {
		detail += invalid(" (%q, %U, is %s)", first, first, scriptExtensions(first).names()[0]).Error()
	}
	return invalid("%s; a name is written in one script, or mixes Latin only with Han, Hiragana, Katakana, "+
		"Hangul and Bopomofo, or with one other script that is not Cyrillic or Greek", detail)
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// mixedLookalike refuses a letter of a non-Latin script that looks like a
// Latin letter in a name that mixes scripts, such as Armenian օ in
// "gօօgle": its key would be the Latin name's, so the name could squat it.
func mixedLookalike(canonical string) error {
	for _, r := range canonical {
		s := scriptExtensions(r)
		if s.all() || s.has(latin) {
			continue
		}
		if k, err := keyOf(string(r)); err == nil && latinLookalike(k) {
			return invalid("username mixes scripts, and the %s letter %q (%U) looks like the Latin %q; "+
				"write the name in one script", s.names()[0], r, r, k)
		}
	}
	return nil
}

// latinLookalike reports whether a key is plain Latin (ASCII) with a
// letter in it: what a name that all looks Latin maps to.
func latinLookalike(key string) bool {
	letter := false
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c >= utf8.RuneSelf {
			return false
		}
		letter = letter || 'a' <= c && c <= 'z'
	}
	return letter
}

// checkWholeScript refuses a name written in one script other than Latin
// whose letters all look like Latin ones (a whole-script confusable, UTS
// #39 §4), such as Cyrillic "сор" for "cop" or Cherokee capitals spelling
// a Latin word: it would squat the Latin name, or let it be squatted.
func checkWholeScript(canonical string, resolved scriptSet, key string) error {
	if resolved.all() || resolved.has(latin) || !latinLookalike(key) {
		return nil
	}
	script := "non-Latin"
	for _, r := range canonical {
		if s := scriptExtensions(r); !s.all() {
			script = s.names()[0]
			break
		}
	}
	return invalid("username is written in %s letters that all look like Latin ones (it reads as %q)", script, key)
}

// keyOf derives the key: the UTS #39 skeleton, case-folded (Unicode
// default case folding), repeated until it stops changing. Folding after
// the mapping makes names meet that the mapping leaves in different cases
// ("0" maps to "O", which folds to "o"; "ς" folds to "σ"), and the fixed
// point makes the key of a key the key itself.
func keyOf(s string) (string, error) {
	cur := s
	for range maxKeyPasses {
		next := skeleton(cur)
		if isASCII(next) {
			next = asciiLower(next) // what fold and NFD do to ASCII, without their allocations
		} else {
			next = norm.NFD.String(fold(next))
		}
		if next == cur {
			if cur == "" || !utf8.ValidString(cur) {
				return "", invalid("username has no usable registry key")
			}
			return cur, nil
		}
		cur = next
	}
	return "", invalid("username has no stable registry key")
}

// fold is Unicode default case folding (CaseFolding.txt, statuses C and
// F). x/text's cases.Fold folds Cherokee capitals to small letters, the
// opposite of CaseFolding.txt (which folds the small letters, added in
// Unicode 8, to the capitals, for stability), and so is not idempotent
// once Cherokee is mixed in; fold turns Cherokee into capitals as the
// standard does, whose confusable prototypes are Latin letters.
func fold(s string) string {
	f := foldCase.String(s)
	if !strings.ContainsFunc(f, isCherokeeSmall) {
		return f
	}
	return strings.Map(func(r rune) rune {
		switch {
		case 0xAB70 <= r && r <= 0xABBF:
			return r - 0xAB70 + 0x13A0
		case 0x13F8 <= r && r <= 0x13FD:
			return r - 8
		}
		return r
	}, f)
}

func isCherokeeSmall(r rune) bool { return 0xAB70 <= r && r <= 0xABBF || 0x13F8 <= r && r <= 0x13FD }

// skeleton is the UTS #39 §4 skeleton: NFD, remove Default_Ignorable code
// points, replace each character by its confusables.txt prototype, NFD.
// (go.mau.fi/util/confusable.Skeleton drops every code point Go does not
// know as graphic instead, which removes prototypes newer than Go's tables
// on a second pass.)
func skeleton(s string) string {
	if isASCII(s) {
		return asciiSkeleton(s)
	}
	return fullSkeleton(s)
}

// fullSkeleton is skeleton without the ASCII shortcut.
func fullSkeleton(s string) string {
	d := norm.NFD.String(s)
	var b strings.Builder
	b.Grow(len(d))
	for _, r := range d {
		switch repl := confusable.GetReplacement(r); {
		case unicode.Is(defaultIgnorable, r):
		case repl != "":
			b.WriteString(repl)
		default:
			b.WriteRune(r)
		}
	}
	return norm.NFD.String(b.String())
}

// asciiSkeleton is skeleton for ASCII input, which is already NFD and has
// no default-ignorable code points; it allocates only when a character has
// a prototype.
func asciiSkeleton(s string) string {
	for i := 0; i < len(s); i++ {
		if confusable.GetReplacement(rune(s[i])) != "" {
			var b strings.Builder
			b.Grow(len(s) + 4)
			b.WriteString(s[:i])
			for _, r := range s[i:] {
				if repl := confusable.GetReplacement(r); repl != "" {
					b.WriteString(repl)
				} else {
					b.WriteRune(r)
				}
			}
			return norm.NFD.String(b.String())
		}
	}
	return s
}

// asciiLower lowercases ASCII letters, which is all that default case
// folding does to ASCII.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// checkDisplayed refuses a name whose typed form, which is what people
// see, has another key than its canonical form: "Iumen11" shows a capital
// I that reads as the l of "lumen11", although its canonical form
// "iumen11" does not.
func checkDisplayed(nfc, canonical, key string) error {
	if nfc == canonical {
		return nil
	}
	if typedKey, err := keyOf(nfc); err == nil && typedKey == key {
		return nil
	}
	for _, r := range nfc {
		mapped := mapString(string(r))
		k1, err1 := keyOf(string(r))
		k2, err2 := keyOf(mapped)
		if err1 != nil || err2 != nil || k1 != k2 {
			return invalid("username as typed shows %q (%U), which looks like %q, but its lowercase %q does not; "+
				"type the name as %q, which is accepted", r, r, k1, mapped, canonical)
		}
	}
	return invalid("username as typed looks like another name than its lowercase form; type it as %q, which is accepted", canonical)
}

// explainPRECIS turns a PRECIS failure, whose text means little to a
// person, into a rejection that names the problem and, where possible, the
// character.
func explainPRECIS(input string) error {
	if r, ok := firstDisallowed(input); ok {
		if unicode.Is(unicode.Cf, r) {
			return invalid("username contains an invisible formatting character (%U)", r)
		}
		return invalid("username contains a character that is not allowed in usernames (%U)", r)
	}
	if r, ok := firstContextual(input); ok {
		if unicode.Is(unicode.Cf, r) {
			return invalid("username contains an invisible joining character (%U) where it is not allowed", r)
		}
		return invalid("username uses %U in a position or combination that is not allowed", r)
	}
	return invalid("username contains characters that are not allowed in usernames")
}

// firstDisallowed finds a rune that PRECIS rejects. It prefers a rune as
// typed, mapped on its own the way the profile maps it (so fullwidth
// letters, allowed only after width folding, are not blamed), and
// otherwise looks at the whole mapped name, because composition can create
// a disallowed rune from allowed ones: "<" and U+0338 compose to "≮".
func firstDisallowed(input string) (rune, bool) {
	for _, r := range input {
		if !allAllowed(mapString(string(r))) {
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
// Contextual runes are left to firstContextual, which explains them better.
func allAllowed(s string) bool {
	allowed := profileV2.Allowed()
	for _, r := range s {
		if !isContextual(r) && !allowed.Contains(r) {
			return false
		}
	}
	return true
}

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

// isContextual lists the CONTEXTJ and CONTEXTO runes of RFC 5892 Appendix A.
func isContextual(r rune) bool {
	switch r {
	case 0x200C, 0x200D, 0x00B7, 0x0375, 0x05F3, 0x05F4, 0x30FB:
		return true
	}
	return (r >= 0x0660 && r <= 0x0669) || (r >= 0x06F0 && r <= 0x06F9)
}
