package pglaunch

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ulikunitz/xz"
)

// testBinaries is the resolution the test helpers use: the same variables
// as `registry dev` (REGISTRY_POSTGRES, REGISTRY_POSTGRES_MIRROR,
// REGISTRY_POSTGRES_CACHE).
func testBinaries(t *testing.T) Binaries {
	t.Helper()
	src, err := ParseSource(os.Getenv("REGISTRY_POSTGRES"))
	if err != nil {
		t.Fatalf("REGISTRY_POSTGRES: %v", err)
	}
	return Binaries{
		Source:   src,
		Mirror:   os.Getenv("REGISTRY_POSTGRES_MIRROR"),
		CacheDir: os.Getenv("REGISTRY_POSTGRES_CACHE"),
		Logger:   testLogger(t),
	}
}

// tarEntry is one file of a fake build.
type tarEntry struct {
	name, link string
	mode       int64
	body       string
	typ        byte
}

// fakeJar builds a jar laid out like Zonky's: a zip holding one .txz.
func fakeJar(t *testing.T, entries []tarEntry) []byte {
	t.Helper()
	var txz bytes.Buffer
	xw, err := xz.NewWriter(&txz)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(xw)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		h := &tar.Header{Name: e.name, Linkname: e.link, Mode: e.mode, Size: int64(len(e.body)), Typeflag: typ}
		if typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := xw.Close(); err != nil {
		t.Fatal(err)
	}
	var jar bytes.Buffer
	zw := zip.NewWriter(&jar)
	if _, err := zw.Create("META-INF/MANIFEST.MF"); err != nil {
		t.Fatal(err)
	}
	w, err := zw.Create("postgres-fake.txz")
	if err != nil {
		t.Fatal(err)
	}
	w.Write(txz.Bytes())
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return jar.Bytes()
}

var fakeBuild = []tarEntry{
	{name: "bin/", typ: tar.TypeDir, mode: 0o755},
	{name: "bin/postgres", mode: 0o755, body: "#!/bin/sh\n"},
	{name: "bin/initdb", mode: 0o755, body: "#!/bin/sh\n"},
	{name: "lib/libpq.so.5.17", mode: 0o644, body: "lib"},
	{name: "lib/libpq.so.5", typ: tar.TypeSymlink, link: "libpq.so.5.17"},
}

// mirror serves jar at the path a Maven repository would, and counts the
// requests for it.
type mirror struct {
	url      string
	requests atomic.Int64
}

func serveJar(t *testing.T, jar []byte) *mirror {
	t.Helper()
	m := &mirror{}
	path := "/maven2/io/zonky/test/postgres/embedded-postgres-binaries-" + platform() + "/9.9.9/embedded-postgres-binaries-" + platform() + "-9.9.9.jar"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != path {
			http.NotFound(w, r)
			return
		}
		m.requests.Add(1)
		w.Header().Set("Content-Length", fmt.Sprint(len(jar)))
		w.Write(jar)
	}))
	t.Cleanup(srv.Close)
	m.url = srv.URL + "/maven2"
	return m
}

func pinFor(jar []byte) *pin {
	sum := sha256.Sum256(jar)
	return &pin{version: "9.9.9", sha256: map[string]string{platform(): hex.EncodeToString(sum[:])}}
}

// closedURL is a mirror address that refuses connections.
func closedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr + "/maven2"
}

// logBuffer is a logger whose lines a test can read.
func logBuffer() (*slog.Logger, *syncBuffer) {
	var buf syncBuffer
	return slog.New(slog.NewTextHandler(&buf, nil)), &buf
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The first call downloads, verifies and unpacks; the second finds the
// build in the cache and never asks the network, which here is dead.
func TestDownloadThenCacheWithoutNetwork(t *testing.T) {
	t.Parallel()
	jar := fakeJar(t, fakeBuild)
	m := serveJar(t, jar)
	cache := filepath.Join(t.TempDir(), "cache")
	log, logs := logBuffer()
	var bar syncBuffer
	b := Binaries{Source: SourceDownload, Mirror: m.url, CacheDir: cache, Logger: log, Progress: &bar, pin: pinFor(jar)}

	dir, err := b.Dir(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(cache, "9.9.9-"+platform(), "bin"); dir != want {
		t.Fatalf("Dir = %s, want %s", dir, want)
	}
	if !hasServerBinaries(dir) {
		t.Fatalf("%s lacks executable postgres and initdb", dir)
	}
	if link, err := os.Readlink(filepath.Join(dir, "..", "lib", "libpq.so.5")); err != nil || link != "libpq.so.5.17" {
		t.Fatalf("symlink: %q, %v", link, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "..", "lib")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("lib directory: %v, %v (want 0755 so the postgres account can read it)", fi, err)
	}
	if n := m.requests.Load(); n != 1 {
		t.Fatalf("%d requests for the jar, want 1", n)
	}
	if got := strings.Count(logs.String(), "downloading PostgreSQL"); got != 1 {
		t.Fatalf("want one line announcing the download, got %d in:\n%s", got, logs)
	}
	if !strings.Contains(bar.String(), "downloading PostgreSQL 9.9.9") || !strings.Contains(bar.String(), "unpacking PostgreSQL 9.9.9") {
		t.Fatalf("no progress bar drawn: %q", bar.String())
	}
	assertNoLeftovers(t, cache)

	b.Mirror = closedURL(t)
	again, err := b.Dir(t.Context())
	if err != nil || again != dir {
		t.Fatalf("warm cache with a dead mirror: %q, %v", again, err)
	}
	if strings.Count(logs.String(), "downloading PostgreSQL") != 1 {
		t.Fatalf("the warm start announced a download:\n%s", logs)
	}
}

// assertNoLeftovers checks that the cache holds only builds and locks, no
// half-downloaded jar or half-unpacked directory.
func assertNoLeftovers(t *testing.T, cache string) {
	t.Helper()
	entries, err := os.ReadDir(cache)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".download-") || strings.HasPrefix(e.Name(), ".unpack-") {
			t.Errorf("leftover %s in the cache", e.Name())
		}
	}
}

func TestChecksumMismatchIsRefused(t *testing.T) {
	t.Parallel()
	jar := fakeJar(t, fakeBuild)
	m := serveJar(t, jar)
	cache := t.TempDir()
	p := pinFor(jar)
	p.sha256[platform()] = strings.Repeat("0", 64)
	_, err := Binaries{Source: SourceDownload, Mirror: m.url, CacheDir: cache, Logger: slog.New(slog.DiscardHandler), pin: p}.Dir(t.Context())
	if !errors.Is(err, ErrNoBinaries) || !strings.Contains(err.Error(), "not the pinned "+strings.Repeat("0", 64)) {
		t.Fatalf("want a digest mismatch, got %v", err)
	}
	if _, err := os.Stat(filepath.Join(cache, "9.9.9-"+platform())); !os.IsNotExist(err) {
		t.Fatalf("a refused build reached the cache: %v", err)
	}
	assertNoLeftovers(t, cache)
}

// An archive that would write outside the cache is refused even when its
// digest matches, and writes nothing there.
func TestEscapingArchiveIsRefused(t *testing.T) {
	t.Parallel()
	for name, entry := range map[string]tarEntry{
		"dot-dot name":     {name: "../../escaped", mode: 0o644, body: "x"},
		"absolute symlink": {name: "lib/evil", typ: tar.TypeSymlink, link: "/etc/passwd"},
		"dot-dot symlink":  {name: "lib/evil", typ: tar.TypeSymlink, link: "../../escaped"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			jar := fakeJar(t, append(append([]tarEntry{}, fakeBuild...), entry))
			m := serveJar(t, jar)
			root := t.TempDir()
			cache := filepath.Join(root, "a", "cache")
			_, err := Binaries{Source: SourceDownload, Mirror: m.url, CacheDir: cache, Logger: slog.New(slog.DiscardHandler), pin: pinFor(jar)}.Dir(t.Context())
			if err == nil || !strings.Contains(err.Error(), "leaves the build directory") {
				t.Fatalf("want a refusal, got %v", err)
			}
			if _, err := os.Lstat(filepath.Join(root, "a", "escaped")); !os.IsNotExist(err) {
				t.Fatalf("the archive wrote outside the cache: %v", err)
			}
			if _, err := os.Stat(filepath.Join(cache, "9.9.9-"+platform())); !os.IsNotExist(err) {
				t.Fatalf("a refused build reached the cache: %v", err)
			}
		})
	}
}

// Test binaries of one `go test ./...` start together; one downloads and
// the others wait for it.
func TestConcurrentCallsDownloadOnce(t *testing.T) {
	t.Parallel()
	jar := fakeJar(t, fakeBuild)
	m := serveJar(t, jar)
	b := Binaries{Source: SourceDownload, Mirror: m.url, CacheDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler), pin: pinFor(jar)}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { _, errs[i] = b.Dir(t.Context()) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if n := m.requests.Load(); n != 1 {
		t.Fatalf("%d downloads, want 1", n)
	}
}

// With no binaries and no network, the error names the URL it fetched,
// why that failed, and the two ways out.
func TestDownloadFailureSaysWhatWasTried(t *testing.T) {
	t.Parallel()
	dead := closedURL(t)
	_, err := Binaries{Source: SourceDownload, Mirror: dead, CacheDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)}.Dir(t.Context())
	if !errors.Is(err, ErrNoBinaries) {
		t.Fatalf("want ErrNoBinaries, got %v", err)
	}
	for _, want := range []string{
		dead + "/io/zonky/test/postgres/embedded-postgres-binaries-" + platform() + "/" + pinned.version + "/",
		"connection refused", "apt-get install postgresql", "DATABASE_URL",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	t.Logf("as reported:\n%v", err)
}

// A mirror that answers 404 is reported with its status.
func TestMirrorWithoutTheBuild(t *testing.T) {
	t.Parallel()
	m := serveJar(t, nil)
	_, err := Binaries{Source: SourceDownload, Mirror: m.url, CacheDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)}.Dir(t.Context())
	if !errors.Is(err, ErrNoBinaries) || !strings.Contains(err.Error(), "404 Not Found") {
		t.Fatalf("want a 404 report, got %v", err)
	}
}

// Not parallel: it changes PATH and binGlobs. With neither system
// binaries nor network, auto reports both attempts; system never goes to
// the network.
func TestNoBinariesAnywhere(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	saved := binGlobs
	binGlobs = []string{filepath.Join(t.TempDir(), "*", "bin")}
	defer func() { binGlobs = saved }()
	dead := closedURL(t)

	_, err := Binaries{Source: SourceAuto, Mirror: dead, CacheDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)}.Dir(t.Context())
	for _, want := range []string{"found none on PATH or under " + binGlobs[0], dead, "connection refused", "apt-get install postgresql", "DATABASE_URL"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("auto: error lacks %q: %v", want, err)
		}
	}

	m := serveJar(t, fakeJar(t, fakeBuild))
	_, err = Binaries{Source: SourceSystem, Mirror: m.url, CacheDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)}.Dir(t.Context())
	if !errors.Is(err, ErrNoBinaries) || !strings.Contains(err.Error(), "PostgreSQL source is system") {
		t.Errorf("system: want a no-binaries error, got %v", err)
	}
	if n := m.requests.Load(); n != 0 {
		t.Errorf("system asked the mirror %d times", n)
	}
}

func TestParseSource(t *testing.T) {
	for in, want := range map[string]Source{"": SourceAuto, "auto": SourceAuto, "System": SourceSystem, " download ": SourceDownload} {
		if got, err := ParseSource(in); err != nil || got != want {
			t.Errorf("ParseSource(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseSource("docker"); err == nil || !strings.Contains(err.Error(), "auto, system, download") {
		t.Errorf("ParseSource(docker): %v", err)
	}
}

// TestPinnedBuildRuns downloads the real pinned build (or finds it in the
// cache), starts a durable cluster from it through the launcher (as root,
// under the postgres account) and stops it; then, with the mirror dead, the
// cached build is still found. CI runs it on an empty cache, so the fetch
// itself is proven on every run.
func TestPinnedBuildRuns(t *testing.T) {
	t.Parallel()
	b := testBinaries(t)
	if b.Source == SourceSystem {
		t.Skip("REGISTRY_POSTGRES=system: the pinned build is not wanted")
	}
	b.Source = SourceDownload
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	dir, err := b.Dir(ctx)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and the pinned build is unavailable: %v", err)
		}
		t.Skipf("skipping: the pinned build is unavailable (no network?): %v", err)
	}
	c := start(t, Config{Dir: filepath.Join(baseDir(t), "data"), BinDir: dir, Durable: true, Logger: testLogger(t)})
	if got := queryString(t, connect(t, c), "SHOW server_version"); got != "17.6" {
		t.Fatalf("server_version = %q, want the pinned 17.6", got)
	}
	stop(t, c)

	b.Mirror = closedURL(t)
	if again, err := b.Dir(t.Context()); err != nil || again != dir {
		t.Fatalf("cached build with a dead mirror: %q, %v", again, err)
	}
}

// A cache entry without its binaries (deleted by hand, say) is fetched
// again and replaced, not trusted and not an error.
func TestDamagedCacheEntryIsReplaced(t *testing.T) {
	t.Parallel()
	jar := fakeJar(t, fakeBuild)
	m := serveJar(t, jar)
	cache := t.TempDir()
	damaged := filepath.Join(cache, "9.9.9-"+platform())
	if err := os.MkdirAll(filepath.Join(damaged, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(damaged, "bin", "initdb"), []byte("old"), 0o755); err != nil {
		t.Fatal(err)
	}
	dir, err := Binaries{Source: SourceDownload, Mirror: m.url, CacheDir: cache, Logger: slog.New(slog.DiscardHandler), pin: pinFor(jar)}.Dir(t.Context())
	if err != nil || !hasServerBinaries(dir) {
		t.Fatalf("Dir = %q, %v", dir, err)
	}
	if n := m.requests.Load(); n != 1 {
		t.Fatalf("%d downloads, want 1", n)
	}
}
