package pglaunch

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// binGlobs are where distributions install versioned server binaries that
// are deliberately kept off PATH (Debian/Ubuntu, then RHEL/PGDG).
var binGlobs = []string{
	"/usr/lib/postgresql/*/bin",
	"/usr/pgsql-*/bin",
}

// errNoBinaries explains how to get out of the situation rather than only
// reporting it, because it is the first thing a new developer will hit.
var errNoBinaries = errors.New("pglaunch: PostgreSQL server binaries (postgres, initdb) not found on PATH or under " +
	strings.Join(binGlobs, ", ") +
	"; install them (e.g. `apt-get install postgresql`) or set DATABASE_URL to use an existing server")

// FindBinDir returns the directory holding the PostgreSQL server binaries
// (postgres and initdb).
//
// PATH wins, so a developer can pick a version explicitly; otherwise the
// highest version installed under the distribution directories is used. The
// error says how to install the binaries or how to point at an existing
// server instead.
func FindBinDir() (string, error) {
	if p, err := exec.LookPath("postgres"); err == nil {
		dir := filepath.Dir(p)
		if hasServerBinaries(dir) {
			return dir, nil
		}
	}
	if dir := newestVersionedBinDir(); dir != "" {
		return dir, nil
	}
	return "", errNoBinaries
}

// hasServerBinaries reports whether dir holds both executables we run.
func hasServerBinaries(dir string) bool {
	for _, name := range []string{"postgres", "initdb"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}

// newestVersionedBinDir returns the usable bin directory with the highest
// version number, or "" if there is none.
func newestVersionedBinDir() string {
	var dirs []string
	for _, pattern := range binGlobs {
		matches, _ := filepath.Glob(pattern) // only fails on a bad pattern
		for _, m := range matches {
			if hasServerBinaries(m) {
				dirs = append(dirs, m)
			}
		}
	}
	if len(dirs) == 0 {
		return ""
	}
	return slices.MaxFunc(dirs, func(a, b string) int {
		return slices.Compare(dirVersion(a), dirVersion(b))
	})
}

// dirVersion extracts the version from ".../15/bin" or "/usr/pgsql-15/bin"
// as numbers, so that 10 sorts above 9.6.
func dirVersion(binDir string) []int {
	name := filepath.Base(filepath.Dir(binDir))
	name = strings.TrimPrefix(name, "pgsql-")
	var v []int
	for _, part := range strings.Split(name, ".") {
		n, err := strconv.Atoi(part)
		if err != nil {
			return v
		}
		v = append(v, n)
	}
	return v
}
