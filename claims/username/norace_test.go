//go:build !race

package username

const raceEnabled = false
