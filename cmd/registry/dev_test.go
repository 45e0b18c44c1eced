package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/usernameregistry/registry/internal/pglaunch"
)

// TestDevPersistsAcrossRestarts runs `registry dev` as a user would: it
// comes up ready, takes a claim, stops cleanly (PostgreSQL included), and
// after a restart on the same data directory still knows the name.
func TestDevPersistsAcrossRestarts(t *testing.T) {
	requirePostgres(t)
	dir := filepath.Join(searchableTempDir(t), "data")
	user := uuid.NewString()

	url, stop := startDev(t, dir)
	resp := postJSON(t, url+"/v1/claims", `{"username":"Zoë","user_id":"`+user+`"}`)
	if resp["status"] != "registered" {
		t.Fatalf("claim: %v", resp)
	}
	stop()
	if pid, err := os.ReadFile(filepath.Join(dir, "postgres", "postmaster.pid")); err == nil {
		t.Fatalf("PostgreSQL still running after dev stopped: postmaster.pid holds %q", strings.SplitN(string(pid), "\n", 2)[0])
	}

	// A dead mirror: when the first start used the downloaded build, the
	// second must take it from the cache without the network.
	url, stop = startDev(t, dir, "--postgres-mirror", deadMirror(t))
	defer stop()
	var held map[string]any
	getJSON(t, url+"/v1/usernames/ZOË", &held)
	if held["user_id"] != user || held["canonical"] != "zoë" {
		t.Fatalf("after restart: %v", held)
	}
}

// TestDevKafkaAddrAndEnvFile: dev listens for Kafka where --kafka-addr
// says, prints the broker's address beside the API's, and writes the
// connection settings to a file a shell can source.
func TestDevKafkaAddrAndEnvFile(t *testing.T) {
	requirePostgres(t)
	dir := filepath.Join(searchableTempDir(t), "data")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	api, printed, stop := startDevLines(t, dir, "--kafka-addr", addr)
	defer stop()
	if !slices.Contains(printed, "embedded Kafka broker at "+addr) {
		t.Errorf("dev printed %q, want the line %q", printed, "embedded Kafka broker at "+addr)
	}
	env := filepath.Join(dir, "registry.env")
	out, err := exec.Command("sh", "-c", `. "$1" && printf '%s\n%s\n%s\n' "$REGISTRY_KAFKA_BROKERS" "$DATABASE_URL" "$REGISTRY_URL"`, "sh", env).CombinedOutput()
	if err != nil {
		t.Fatalf("sourcing %s: %v\n%s", env, err, out)
	}
	got := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(got) != 3 || got[0] != addr || !strings.HasPrefix(got[1], "postgres://") || got[2] != api {
		t.Fatalf("sourced settings %q, want the broker %s, a postgres:// URL and the API %s", got, addr, api)
	}
	conn, err := pgx.Connect(t.Context(), got[1])
	if err != nil {
		t.Fatalf("connecting with the sourced DATABASE_URL: %v", err)
	}
	conn.Close(t.Context())
}

// requirePostgres makes sure dev will find PostgreSQL server binaries,
// the way dev itself looks (REGISTRY_POSTGRES and its mirror and cache),
// downloading the pinned build if that is the way. It skips the test when
// there are none, or fails it under CI.
func requirePostgres(t *testing.T) {
	t.Helper()
	src, err := pglaunch.ParseSource(os.Getenv("REGISTRY_POSTGRES"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	b := pglaunch.Binaries{Source: src, Mirror: os.Getenv("REGISTRY_POSTGRES_MIRROR"), CacheDir: os.Getenv("REGISTRY_POSTGRES_CACHE")}
	if _, err := b.Dir(ctx); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

// deadMirror is a mirror URL on a closed port.
func deadMirror(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "http://" + l.Addr().String() + "/maven2"
}

// On a machine without server binaries and without network, dev stops
// with what it tried and the two ways out.
func TestDevWithoutPostgresSaysWhatToDo(t *testing.T) {
	t.Parallel()
	dead := deadMirror(t)
	err := runDev(t.Context(), []string{
		"--data", filepath.Join(t.TempDir(), "data"), "--http", "127.0.0.1:0", "--database", "",
		"--postgres", "download", "--postgres-mirror", dead, "--postgres-cache", t.TempDir(),
	}, io.Discard, slog.New(slog.DiscardHandler))
	if !errors.Is(err, pglaunch.ErrNoBinaries) {
		t.Fatalf("want ErrNoBinaries, got %v", err)
	}
	for _, want := range []string{dead + "/io/zonky/test/postgres/", "connection refused", "apt-get install postgresql", "DATABASE_URL"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestDevRefusesUnknownPostgresSource(t *testing.T) {
	t.Parallel()
	err := runDev(t.Context(), []string{"--data", t.TempDir(), "--postgres", "docker"}, io.Discard, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "auto, system, download") {
		t.Fatalf("want a refusal naming the choices, got %v", err)
	}
}

// searchableTempDir is a temp dir the postgres account can reach when
// the test runs as root (t.TempDir is private to its owner).
func searchableTempDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "registry-dev-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startDev runs `registry dev` in process until stop is called and
// returns its API URL once /readyz answers 200.
func startDev(t *testing.T, dir string, extra ...string) (url string, stop func()) {
	t.Helper()
	url, _, stop = startDevLines(t, dir, extra...)
	return url, stop
}

// startDevLines is startDev that also returns the lines dev printed
// before the API's address.
func startDevLines(t *testing.T, dir string, extra ...string) (url string, printed []string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- runDev(ctx, append([]string{"--data", dir, "--http", "127.0.0.1:0", "--ops-addr", ""}, extra...), pw, slog.New(slog.DiscardHandler))
		pw.Close()
	}()
	br := bufio.NewReader(pr)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			cancel()
			t.Fatalf("dev printed no address: %v (dev: %v)", err, <-done)
		}
		if after, ok := strings.CutPrefix(line, "registry API listening on "); ok {
			url = strings.TrimSpace(after)
			break
		}
		printed = append(printed, strings.TrimSpace(line))
	}
	go io.Copy(io.Discard, br) //nolint:errcheck // drain
	waitReady(t, url)
	return url, printed, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dev stopped with: %v", err)
		}
	}
}

func waitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s/readyz not 200 within 60s", url)
}

func postJSON(t *testing.T, url, body string) map[string]any {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func getJSON(t *testing.T, url string, out any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode
}
