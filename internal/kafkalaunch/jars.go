package kafkalaunch

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// pom is the Maven project that names the server and its version; Jars
// resolves it. It is kept as a file so that Maven users can read it.
//
//go:embed maven/pom.xml
var pom []byte

// dependencyPlugin pins the Maven plugin that copies the jars, so that the
// resolution does not depend on the Maven installation's default.
const dependencyPlugin = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

// Version is the Apache Kafka version the launcher runs: the kafka.version
// of the embedded pom, which a test keeps equal to the apache/kafka image
// in docker-compose.yml.
var Version = pomVersion(pom)

func pomVersion(b []byte) string {
	m := regexp.MustCompile(`<kafka\.version>([^<]+)</kafka\.version>`).FindSubmatch(b)
	if m == nil {
		panic("kafkalaunch: maven/pom.xml has no <kafka.version>")
	}
	return strings.TrimSpace(string(m[1]))
}

// DefaultCacheDir returns where Jars keeps resolved classpaths when the
// caller names no directory: the user's cache directory
// (os.UserCacheDir, e.g. ~/.cache) under usernameregistry/kafka.
func DefaultCacheDir() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("kafkalaunch: finding the user cache directory: %w", err)
	}
	return filepath.Join(dir, "usernameregistry", "kafka"), nil
}

// completeMarker is written last into a resolved directory, so that a
// resolution cut short is never taken for a finished one.
const completeMarker = ".complete"

// Jars returns a directory holding the Apache Kafka server's jars and their
// runtime dependencies, for a `java -cp dir/*` classpath. The directory is
// cacheDir/<Version>-<pom hash>: a cached one is returned at once; a
// missing one is resolved by running `mvn` (which must be on PATH, and
// reach Maven Central or a mirror the user's Maven settings name) on the
// embedded pom. An empty cacheDir means DefaultCacheDir. Concurrent calls,
// from several processes too, are safe: each resolves into a directory of
// its own and the first to finish renames it into place.
func Jars(ctx context.Context, cacheDir string, log *slog.Logger) (string, error) {
	if cacheDir == "" {
		var err error
		if cacheDir, err = DefaultCacheDir(); err != nil {
			return "", err
		}
	}
	sum := sha256.Sum256(pom)
	dir := filepath.Join(cacheDir, Version+"-"+hex.EncodeToString(sum[:4]))
	if _, err := os.Stat(filepath.Join(dir, completeMarker)); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("kafkalaunch: creating jar cache %s: %w", cacheDir, err)
	}
	work, err := os.MkdirTemp(cacheDir, "resolving-")
	if err != nil {
		return "", fmt.Errorf("kafkalaunch: creating jar cache entry: %w", err)
	}
	defer os.RemoveAll(work)
	log.Info("resolving the Apache Kafka server jars with Maven (first use only)", "version", Version, "into", dir)
	if err := resolve(ctx, work); err != nil {
		return "", err
	}
	if err := os.Rename(filepath.Join(work, "jars"), dir); err != nil {
		// Another process finished first: use its copy.
		if _, statErr := os.Stat(filepath.Join(dir, completeMarker)); statErr == nil {
			return dir, nil
		}
		return "", fmt.Errorf("kafkalaunch: moving resolved jars into %s: %w", dir, err)
	}
	return dir, nil
}

// resolve runs Maven on the embedded pom in work and leaves the jars,
// marked complete, in work/jars.
func resolve(ctx context.Context, work string) error {
	mvn, err := exec.LookPath("mvn")
	if err != nil {
		return fmt.Errorf("kafkalaunch: the Apache Kafka jars are not cached and Maven is missing to resolve them: %w", err)
	}
	pomPath := filepath.Join(work, "pom.xml")
	if err := os.WriteFile(pomPath, pom, 0o644); err != nil {
		return fmt.Errorf("kafkalaunch: writing pom: %w", err)
	}
	out := filepath.Join(work, "jars")
	cmd := exec.CommandContext(ctx, mvn, "-B", "-q", "-f", pomPath,
		dependencyPlugin+":copy-dependencies", "-DincludeScope=runtime", "-DoutputDirectory="+out)
	cmd.Dir = work
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("kafkalaunch: resolving org.apache.kafka:kafka_2.13:%s with Maven: %w\n%s", Version, err, tail(b, 4<<10))
	}
	if err := checkJars(out); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, completeMarker), nil, 0o644); err != nil {
		return fmt.Errorf("kafkalaunch: marking jars complete: %w", err)
	}
	return nil
}

// checkJars makes sure Maven left the server jar itself behind.
func checkJars(dir string) error {
	want := "kafka_2.13-" + Version + ".jar"
	if _, err := os.Stat(filepath.Join(dir, want)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("kafkalaunch: Maven finished but %s is not in %s", want, dir)
		}
		return fmt.Errorf("kafkalaunch: checking resolved jars: %w", err)
	}
	return nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
