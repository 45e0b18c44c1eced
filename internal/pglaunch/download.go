package pglaunch

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/ulikunitz/xz"
)

// DefaultMirror is Maven Central, where the Zonky project publishes its
// PostgreSQL builds (io.zonky.test.postgres:embedded-postgres-binaries-*),
// the builds Go's embedded-postgres and Java's Zonky and Testcontainers
// users download.
const DefaultMirror = "https://repo1.maven.org/maven2"

// pin is a PostgreSQL version and the SHA-256 of its build (the jar Maven
// serves) for each platform, in Zonky's platform names.
type pin struct {
	version string
	sha256  map[string]string
}

// pinned is the build downloaded when the machine has no server binaries:
// the same PostgreSQL as the postgres:17.6 image in docker-compose.yml.
// Each digest is the one Maven Central publishes beside the jar (its URL
// plus ".sha256"); a jar with any other digest is refused, whichever
// mirror served it. Changing the version means replacing every digest.
var pinned = pin{
	version: "17.6.0",
	sha256: map[string]string{
		"linux-amd64":        "23da5a044b4fb7a5a081a45008c95749c873305328d73f86aefd56922ce1d29d",
		"linux-amd64-alpine": "8584bc6a7818e96344d291733460a1fecb98f133dfd7beba95fc57e4b02f0462",
		"linux-arm64v8":      "84427ea54a5238247924ef3b0f940e7d027e58760f19d7325242e50d22fa014a",
		"darwin-amd64":       "f1d6d39896ca48e65d6dbcb492d809df0d4952c65299de8af6e08d2208eae3e0",
		"darwin-arm64v8":     "e87ee36767dee4f00f829d7a52e4a216e2fdebe5934c5683730940aabe570721",
	},
}

// PinnedVersion is the version of the build downloaded when the machine
// has no server binaries, such as "17.6.0".
func PinnedVersion() string { return pinned.version }

const (
	// responseHeaderTimeout bounds the wait for a mirror to start answering;
	// the body itself is bounded only by the caller's ctx, since a slow
	// line still finishes.
	responseHeaderTimeout = 30 * time.Second
	// lockPoll is how often a process waiting for another's download of
	// the same build looks again.
	lockPoll = 100 * time.Millisecond
)

// platform is this machine's name in Zonky's builds, as embedded-postgres
// derives it: arm64 is arm64v8, and Alpine (musl) has builds of its own.
func platform() string {
	arch := runtime.GOARCH
	if arch == "arm64" {
		arch = "arm64v8"
	}
	p := runtime.GOOS + "-" + arch
	if runtime.GOOS == "linux" {
		if _, err := os.Stat("/etc/alpine-release"); err == nil {
			p += "-alpine"
		}
	}
	return p
}

// build is one pinned build for one platform.
type build struct {
	version, platform, sha256 string
}

// name is the cache directory's name, e.g. 17.6.0-linux-amd64.
func (b build) name() string { return b.version + "-" + b.platform }

// url is where a Maven repository serves the build's jar.
func (b build) url(mirror string) string {
	artifact := "embedded-postgres-binaries-" + b.platform
	return fmt.Sprintf("%s/io/zonky/test/postgres/%s/%s/%s-%s.jar", mirror, artifact, b.version, artifact, b.version)
}

// pinnedBuild returns the bin directory of the pinned build, downloading
// it first when the cache does not hold it.
func (b Binaries) pinnedBuild(ctx context.Context) (string, error) {
	p := platform()
	digest, ok := b.pin.sha256[p]
	if !ok {
		return "", fmt.Errorf("there is no pinned PostgreSQL build for this platform (%s)", p)
	}
	bd := build{version: b.pin.version, platform: p, sha256: digest}
	dest := filepath.Join(b.CacheDir, bd.name())
	if hasServerBinaries(filepath.Join(dest, "bin")) {
		return filepath.Join(dest, "bin"), nil
	}
	if err := b.fetchLocked(ctx, bd, dest); err != nil {
		return "", fmt.Errorf("fetching PostgreSQL %s (%s) from %s into %s failed: %w", bd.version, bd.platform, bd.url(b.Mirror), b.CacheDir, err)
	}
	return filepath.Join(dest, "bin"), nil
}

// fetchLocked downloads and unpacks bd into dest unless another process
// did while we waited for the cache's lock: test binaries of one `go test`
// start at once, and only one of them should download.
func (b Binaries) fetchLocked(ctx context.Context, bd build, dest string) error {
	// 0755 all the way: as root, the postgres account runs these binaries.
	if err := os.MkdirAll(b.CacheDir, 0o755); err != nil {
		return fmt.Errorf("creating the cache directory: %w", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(b.CacheDir, "."+bd.name()+".lock"))
	if err != nil {
		return err
	}
	defer unlock()
	if hasServerBinaries(filepath.Join(dest, "bin")) {
		return nil
	}
	return b.fetch(ctx, bd, dest)
}

// lockFile takes an exclusive flock on path, polling so that ctx can end
// the wait.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the cache lock: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing releases the lock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for another process's download (lock %s): %w", path, context.Cause(ctx))
		case <-time.After(lockPoll):
		}
	}
}

// fetch downloads the jar, checks its digest, unpacks it beside dest and
// renames the result into place, so dest either holds a whole build or
// does not exist.
func (b Binaries) fetch(ctx context.Context, bd build, dest string) error {
	jar, err := os.CreateTemp(b.CacheDir, ".download-*.jar")
	if err != nil {
		return fmt.Errorf("creating a temporary file: %w", err)
	}
	defer os.Remove(jar.Name())
	defer jar.Close()
	began := time.Now()
	if err := b.download(ctx, bd, jar); err != nil {
		return err
	}
	staging, err := os.MkdirTemp(b.CacheDir, ".unpack-*")
	if err != nil {
		return fmt.Errorf("creating a temporary directory: %w", err)
	}
	defer os.RemoveAll(staging) // a no-op once renamed
	meter := func(size int64) (io.Writer, func()) { return b.meter("unpacking", bd, size) }
	if err := unpackJar(jar.Name(), staging, meter); err != nil {
		return err
	}
	if err := openDirs(staging); err != nil {
		return fmt.Errorf("opening the unpacked build to other users: %w", err)
	}
	if !hasServerBinaries(filepath.Join(staging, "bin")) {
		return errors.New("the build holds no bin/postgres and bin/initdb")
	}
	// Under the lock and without binaries, anything at dest is a damaged
	// entry (a file deleted by hand, say), which the new build replaces.
	if err := os.RemoveAll(dest); err != nil {
		return fmt.Errorf("removing the incomplete build at %s: %w", dest, err)
	}
	if err := os.Rename(staging, dest); err != nil {
		return fmt.Errorf("moving the unpacked build into place: %w", err)
	}
	b.Logger.Debug("PostgreSQL build ready", "dir", dest, "took", time.Since(began).Round(time.Millisecond))
	return nil
}

// download writes the jar to w and checks its SHA-256 against the pin.
func (b Binaries) download(ctx context.Context, bd build, w io.Writer) error {
	url := bd.url(b.Mirror)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	transport := http.DefaultTransport.(*http.Transport).Clone() // keeps the proxy settings
	transport.ResponseHeaderTimeout = responseHeaderTimeout
	defer transport.CloseIdleConnections()
	resp, err := (&http.Client{Transport: transport}).Do(req)
	if ue := (*neturl.Error)(nil); errors.As(err, &ue) {
		return ue.Err // the caller names the URL already
	} else if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the mirror answered %s", resp.Status)
	}
	b.Logger.Info("downloading PostgreSQL (first start only; later starts use the cache)",
		"version", bd.version, "platform", bd.platform, "bytes", resp.ContentLength, "url", url, "cache", b.CacheDir)
	h := sha256.New()
	m, done := b.meter("downloading", bd, resp.ContentLength)
	defer done()
	if _, err := io.Copy(io.MultiWriter(w, h, m), resp.Body); err != nil {
		return fmt.Errorf("reading the build: %w", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != bd.sha256 {
		return fmt.Errorf("the build's SHA-256 is %s, not the pinned %s (internal/pglaunch/download.go); refusing it", got, bd.sha256)
	}
	return nil
}

// meter returns a writer that counts one step's bytes (size in all; -1
// when unknown) on a progress bar drawn on b.Progress, and the func that
// ends the bar; with no b.Progress both do nothing. The bar shows bytes,
// rate and time left, and clears itself at the end so the terminal keeps
// only the log lines.
func (b Binaries) meter(step string, bd build, size int64) (io.Writer, func()) {
	if b.Progress == nil {
		return io.Discard, func() {}
	}
	bar := progressbar.NewOptions64(size,
		progressbar.OptionSetWriter(b.Progress),
		progressbar.OptionSetDescription(step+" PostgreSQL "+bd.version+" "+bd.platform),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionFullWidth(),
		progressbar.OptionSetRenderBlankState(true), // at once, before the first bytes
		progressbar.OptionClearOnFinish(),
	)
	return bar, func() { bar.Close() } //nolint:errcheck // a bar that cannot draw is no reason to fail
}

// unpackJar extracts the build: the jar is a zip holding one .txz, a
// tar archive compressed with xz, laid out as bin/, lib/ and share/.
// Decompressing is the slow part, so meter(size of the .txz) counts the
// compressed bytes as they are read.
func unpackJar(jarPath, dir string, meter func(size int64) (io.Writer, func())) error {
	zr, err := zip.OpenReader(jarPath)
	if err != nil {
		return fmt.Errorf("opening the build's jar: %w", err)
	}
	defer zr.Close()
	for _, f := range zr.File {
		if !strings.HasSuffix(f.Name, ".txz") {
			continue
		}
		rc, err := f.Open()
		if err != nil {
			return fmt.Errorf("opening %s in the jar: %w", f.Name, err)
		}
		defer rc.Close()
		m, done := meter(int64(f.UncompressedSize64))
		defer done()
		// ulikunitz/xz reads byte by byte: buffered, it is about 7x faster.
		xr, err := xz.NewReader(bufio.NewReaderSize(io.TeeReader(rc, m), 1<<20))
		if err != nil {
			return fmt.Errorf("decompressing %s: %w", f.Name, err)
		}
		if err := untar(tar.NewReader(xr), dir); err != nil {
			return fmt.Errorf("unpacking %s: %w", f.Name, err)
		}
		return nil
	}
	return errors.New("the jar holds no .txz archive")
}

// untar writes the archive's directories, regular files and relative
// symlinks under dir. A name or link that would leave dir is an error, so
// even a hostile archive cannot write elsewhere; but the digest is checked
// first, so only the pinned build ever gets here.
func untar(tr *tar.Reader, dir string) error {
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if !filepath.IsLocal(h.Name) {
			return fmt.Errorf("entry %q leaves the build directory", h.Name)
		}
		target := filepath.Join(dir, h.Name)
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(target, 0o755)
		case tar.TypeReg:
			err = writeFile(target, tr, fs.FileMode(h.Mode).Perm()|0o444)
		case tar.TypeSymlink:
			if filepath.IsAbs(h.Linkname) || !filepath.IsLocal(filepath.Join(filepath.Dir(h.Name), h.Linkname)) {
				return fmt.Errorf("symlink %q -> %q leaves the build directory", h.Name, h.Linkname)
			}
			err = os.Symlink(h.Linkname, target)
		default:
			return fmt.Errorf("entry %q has unsupported type %q", h.Name, h.Typeflag)
		}
		if err != nil {
			return err
		}
	}
}

// writeFile creates path with perm exactly, whatever the umask: as root,
// the postgres account must be able to read and run what we unpack.
func writeFile(path string, r io.Reader, perm fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Chmod(perm)
	}
	return errors.Join(err, f.Close())
}

// openDirs makes every directory under root 0755, whatever the umask was
// when they were created, for the same reason as writeFile.
func openDirs(root string) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		return os.Chmod(path, 0o755)
	})
}
