package username

import (
	"maps"
	"slices"
	"sort"
	"strings"
	"unicode"
)

// scriptSet is a set of scripts, a bit per script: Go's unicode.Scripts in
// name order, then the augmented sets of UTS #39 §5.1 (Han with Bopomofo,
// Japanese, Korean). A set with every bit set stands for Common and
// Inherited, which UTS #39 §5.1 treats as belonging to every script.
type scriptSet [3]uint64

// Pseudo-scripts of UTS #39 §5.1 (ISO 15924 Hanb, Jpan, Kore).
const (
	hanb = "Han with Bopomofo"
	jpan = "Japanese"
	kore = "Korean"
)

var (
	scriptNames = append(slices.Sorted(maps.Keys(unicode.Scripts)), hanb, jpan, kore)
	scriptIDs   = func() map[string]int {
		m := make(map[string]int, len(scriptNames))
		for i, n := range scriptNames {
			m[n] = i
		}
		return m
	}()
	allScripts = func() (s scriptSet) {
		for i := range scriptNames {
			s.add(i)
		}
		return s
	}()
	// runeScripts maps every assigned code point to its Script, as ranges
	// sorted by lo, for a binary search instead of 160 table lookups.
	runeScripts = buildRuneScripts()
	// extensions is scriptExtensionRanges with the names turned into sets.
	extensions = buildExtensions()
)

func (s *scriptSet) add(id int)     { s[id/64] |= 1 << (id % 64) }
func (s scriptSet) has(id int) bool { return s[id/64]&(1<<(id%64)) != 0 }
func (s scriptSet) and(o scriptSet) scriptSet {
	return scriptSet{s[0] & o[0], s[1] & o[1], s[2] & o[2]}
}
func (s scriptSet) empty() bool { return s == scriptSet{} }
func (s scriptSet) all() bool   { return s == allScripts }

// names lists the scripts of s by name, for messages.
func (s scriptSet) names() []string {
	var out []string
	for i, n := range scriptNames {
		if s.has(i) {
			out = append(out, n)
		}
	}
	return out
}

func setOf(names ...string) scriptSet {
	var s scriptSet
	for _, n := range names {
		s.add(scriptIDs[n])
	}
	return s
}

type scriptRange struct {
	lo, hi rune
	id     int
}

func buildRuneScripts() []scriptRange {
	var out []scriptRange
	for name, t := range unicode.Scripts {
		id := scriptIDs[name]
		for _, r := range t.R16 {
			out = appendRange(out, rune(r.Lo), rune(r.Hi), rune(r.Stride), id)
		}
		for _, r := range t.R32 {
			out = appendRange(out, rune(r.Lo), rune(r.Hi), rune(r.Stride), id)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].lo < out[j].lo })
	return out
}

func appendRange(out []scriptRange, lo, hi, stride rune, id int) []scriptRange {
	if stride == 1 {
		return append(out, scriptRange{lo, hi, id})
	}
	for r := lo; r <= hi; r += stride {
		out = append(out, scriptRange{r, r, id})
	}
	return out
}

type extRange struct {
	lo, hi rune
	set    scriptSet
}

func buildExtensions() []extRange {
	out := make([]extRange, len(scriptExtensionRanges))
	for i, r := range scriptExtensionRanges {
		out[i] = extRange{r.lo, r.hi, setOf(strings.Fields(r.scripts)...)}
	}
	return out
}

var (
	common    = scriptIDs["Common"]
	inherited = scriptIDs["Inherited"]
	latin     = scriptIDs["Latin"]
)

// scriptOf returns the Script property of r (UAX #24), or -1 for an
// unassigned code point.
func scriptOf(r rune) int {
	switch {
	case r < 0x80 && ('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z'):
		return latin
	case r < 0x80:
		return common
	}
	i := sort.Search(len(runeScripts), func(i int) bool { return runeScripts[i].hi >= r })
	if i < len(runeScripts) && runeScripts[i].lo <= r {
		return runeScripts[i].id
	}
	return -1
}

// scriptExtensions returns the Script_Extensions of r (UAX #24), as UTS
// #39 §5.1 uses them: Common and Inherited stand for every script.
func scriptExtensions(r rune) scriptSet {
	if r >= 0x80 {
		i := sort.Search(len(extensions), func(i int) bool { return extensions[i].hi >= r })
		if i < len(extensions) && extensions[i].lo <= r {
			return extensions[i].set
		}
	}
	id := scriptOf(r)
	if id < 0 || id == common || id == inherited {
		return allScripts
	}
	var s scriptSet
	s.add(id)
	return s
}

var (
	han      = scriptIDs["Han"]
	hiragana = scriptIDs["Hiragana"]
	katakana = scriptIDs["Katakana"]
	hangul   = scriptIDs["Hangul"]
	bopomofo = scriptIDs["Bopomofo"]
)

// augment adds the pseudo-scripts of UTS #39 §5.1: Han belongs to Han with
// Bopomofo, Japanese and Korean; Hiragana and Katakana to Japanese; Hangul
// to Korean; Bopomofo to Han with Bopomofo.
func augment(s scriptSet) scriptSet {
	if s.all() {
		return s
	}
	if s.has(han) {
		s.add(scriptIDs[hanb])
		s.add(scriptIDs[jpan])
		s.add(scriptIDs[kore])
	}
	if s.has(hiragana) || s.has(katakana) {
		s.add(scriptIDs[jpan])
	}
	if s.has(hangul) {
		s.add(scriptIDs[kore])
	}
	if s.has(bopomofo) {
		s.add(scriptIDs[hanb])
	}
	return s
}

// recommended are the Recommended scripts of UAX #31 Table 4 (Unicode
// 15.0), the ones UTS #39 §5.2 lets Moderately Restrictive names mix
// with Latin (less Cyrillic and Greek, which it excludes).
var recommended = setOf("Arabic", "Armenian", "Bengali", "Bopomofo", "Cyrillic", "Devanagari", "Ethiopic",
	"Georgian", "Greek", "Gujarati", "Gurmukhi", "Han", "Hangul", "Hebrew", "Hiragana", "Kannada", "Katakana",
	"Khmer", "Lao", "Latin", "Malayalam", "Myanmar", "Oriya", "Sinhala", "Tamil", "Telugu", "Thaana", "Thai",
	"Tibetan")

// highlyRestrictive are the script combinations UTS #39 §5.2 allows at
// the Highly Restrictive level (and so at Moderately Restrictive).
var highlyRestrictive = []scriptSet{
	setOf("Latin", "Han", "Hiragana", "Katakana"),
	setOf("Latin", "Han", "Bopomofo"),
	setOf("Latin", "Han", "Hangul"),
}

// covered reports whether every set in sets meets cover: the string is
// "covered by" cover in the sense of UTS #39 §5.1.
func covered(sets []scriptSet, cover scriptSet) bool {
	for _, s := range sets {
		if s.and(cover).empty() {
			return false
		}
	}
	return true
}
