package pglaunch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// Source says where the PostgreSQL server binaries come from.
type Source string

const (
	// SourceAuto uses the machine's server binaries when [FindBinDir] finds
	// them, and otherwise the pinned build, downloaded once into the cache.
	SourceAuto Source = "auto"
	// SourceSystem uses only the machine's server binaries.
	SourceSystem Source = "system"
	// SourceDownload uses only the pinned build: from the cache, or
	// downloaded into it when it is not there yet.
	SourceDownload Source = "download"
)

// ParseSource parses "auto", "system" or "download"; "" means auto.
func ParseSource(s string) (Source, error) {
	switch src := Source(strings.ToLower(strings.TrimSpace(s))); src {
	case "":
		return SourceAuto, nil
	case SourceAuto, SourceSystem, SourceDownload:
		return src, nil
	}
	return "", fmt.Errorf("PostgreSQL source %q is not one of auto, system, download", s)
}

// ErrNoBinaries is wrapped by the error of [Binaries.Dir] (and so of
// [Start]) when neither the machine nor the download gave usable server
// binaries. The error itself says what was tried and the ways out.
var ErrNoBinaries = errors.New("no PostgreSQL server binaries")

// Binaries says where [Start] gets the server binaries (initdb and
// postgres) when [Config.BinDir] is empty. The zero value is SourceAuto with
// Maven Central as the mirror and the per-user cache.
type Binaries struct {
	// Source picks the machine's binaries, the pinned build, or the first
	// of them that is available. Defaults to SourceAuto.
	Source Source
	// Mirror is the base URL of a Maven repository that serves the pinned
	// build under Maven's layout (a mirror of Maven Central, or a company
	// repository that proxies it). Defaults to [DefaultMirror].
	Mirror string
	// CacheDir holds the unpacked builds, one directory per version and
	// platform (CacheDir/17.6.0-linux-amd64). Defaults to [DefaultCacheDir].
	CacheDir string
	// Progress, when not nil, receives a progress bar while the build
	// downloads; give it a terminal, not a log. Defaults to none.
	Progress io.Writer
	// Logger receives the line announcing a download. Defaults to
	// Config.Logger inside Start, else slog.Default().
	Logger *slog.Logger

	pin *pin // tests replace the pinned build
}

func (b Binaries) withDefaults() (Binaries, error) {
	src, err := ParseSource(string(b.Source))
	if err != nil {
		return b, fmt.Errorf("pglaunch: %w", err)
	}
	b.Source = src
	if b.Mirror == "" {
		b.Mirror = DefaultMirror
	}
	b.Mirror = strings.TrimRight(b.Mirror, "/")
	if b.CacheDir == "" {
		if b.CacheDir, err = DefaultCacheDir(); err != nil {
			return b, err
		}
	}
	if b.CacheDir, err = filepath.Abs(b.CacheDir); err != nil {
		return b, fmt.Errorf("pglaunch: resolving cache directory: %w", err)
	}
	if b.Logger == nil {
		b.Logger = slog.Default()
	}
	if b.pin == nil {
		b.pin = &pinned
	}
	return b, nil
}

// DefaultCacheDir is where downloaded builds are kept unless
// [Binaries.CacheDir] says otherwise: os.UserCacheDir()/usernameregistry/
// postgres (on Linux $XDG_CACHE_HOME or ~/.cache), and for root
// /var/cache/usernameregistry/postgres, because root's home is usually
// closed to the postgres account that runs the server.
func DefaultCacheDir() (string, error) {
	if os.Geteuid() == 0 {
		return "/var/cache/usernameregistry/postgres", nil
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("pglaunch: finding the user cache directory for the PostgreSQL build (set a cache directory explicitly): %w", err)
	}
	return filepath.Join(dir, "usernameregistry", "postgres"), nil
}

// Dir returns the directory holding initdb and postgres, following
// b.Source: the machine's binaries ([FindBinDir]), the pinned build from the
// cache, or the pinned build downloaded, verified against the digest kept in
// this package and unpacked into the cache. A build in the cache is used
// without touching the network.
//
// ctx bounds the download. When no binaries can be had, the error wraps
// [ErrNoBinaries] and says what was tried and the two ways out.
func (b Binaries) Dir(ctx context.Context) (string, error) {
	b, err := b.withDefaults()
	if err != nil {
		return "", err
	}
	var tried []string
	if b.Source != SourceDownload {
		dir, err := FindBinDir()
		if err == nil {
			return dir, nil
		}
		tried = append(tried, "found none on PATH or under "+strings.Join(binGlobs, ", "))
		if b.Source == SourceSystem {
			tried = append(tried, "did not download the pinned build (PostgreSQL source is system)")
			return "", noBinaries(tried)
		}
	}
	dir, err := b.pinnedBuild(ctx)
	if err == nil {
		return dir, nil
	}
	if ctx.Err() != nil {
		return "", err
	}
	return "", noBinaries(append(tried, err.Error()))
}

// noBinaries is the error a new developer meets first, so it says what was
// tried and how to get out, not only that it failed.
func noBinaries(tried []string) error {
	return fmt.Errorf("pglaunch: %w: %s. Two ways out: install the PostgreSQL server package "+
		"(e.g. `apt-get install postgresql`), or set DATABASE_URL to use an existing server "+
		"(a reachable mirror of Maven Central can also be set with REGISTRY_POSTGRES_MIRROR)",
		ErrNoBinaries, strings.Join(tried, "; "))
}
