//go:build race

package username

// raceEnabled: the race detector makes TestEveryCodePoint about ten times
// slower, so under it the walk checks "a"+r for a seventh of the code
// points (every code point alone is still checked).
const raceEnabled = true
