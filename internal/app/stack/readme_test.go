package stack_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/usernameregistry/registry/internal/app/stack/stacktest"
)

// readmeExample is one `$ curl …` of README.md's HTTP API section and the
// answer the README shows for it.
type readmeExample struct {
	command string
	method  string
	url     string
	body    []byte
	request map[string]string // the request's -H headers, $TOKEN unexpanded
	status  string            // "201 Created"
	headers map[string]string // as shown (Date and Content-Length are left out)
	answer  string            // the JSON body
}

// readmeExamples parses the console blocks between "## HTTP API" and the
// next top-level section.
func readmeExamples(t *testing.T) []readmeExample {
	t.Helper()
	raw, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	start := strings.Index(text, "\n## HTTP API")
	end := strings.Index(text[start+1:], "\n## ")
	if start < 0 || end < 0 {
		t.Fatal("README.md has no HTTP API section")
	}
	var out []readmeExample
	for _, block := range strings.Split(text[start:start+1+end], "```console\n")[1:] {
		block = block[:strings.Index(block, "```")]
		for _, ex := range strings.Split("\n"+block, "\n$ ")[1:] {
			out = append(out, parseExample(t, ex))
		}
	}
	return out
}

func parseExample(t *testing.T, ex string) readmeExample {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(ex), "\n")
	e := readmeExample{command: lines[0], method: http.MethodGet, headers: map[string]string{}, request: map[string]string{}}
	cmd := lines[0]
	if rest, ok := strings.CutPrefix(cmd, "printf "); ok { // printf 'FORMAT' ARG | curl …
		args := words(t, rest[:strings.Index(rest, "|")])
		n, _ := strconv.Atoi(args[1])
		e.body = fmt.Appendf(nil, args[0], n)
		cmd = strings.TrimSpace(rest[strings.Index(rest, "|")+1:])
	}
	w := words(t, cmd)
	for i := 1; i < len(w); i++ {
		switch w[i] {
		case "-si":
		case "-X":
			i++
			e.method = w[i]
		case "-H":
			i++
			k, v, _ := strings.Cut(w[i], ": ")
			e.request[k] = v
		case "-d":
			i++
			e.body = []byte(w[i])
		case "--data-binary":
			i++
		default:
			e.url = w[i]
		}
	}
	status, ok := strings.CutPrefix(lines[1], "HTTP/1.1 ")
	if !ok {
		t.Fatalf("example %q: no status line", cmd)
	}
	e.status = status
	i := 2
	for ; i < len(lines) && lines[i] != ""; i++ {
		k, v, _ := strings.Cut(lines[i], ": ")
		e.headers[http.CanonicalHeaderKey(k)] = v
	}
	e.answer = strings.Join(lines[i+1:], "\n")
	return e
}

// words splits a shell command line: words separated by spaces, with
// single or double quotes around words that have them.
func words(t *testing.T, s string) []string {
	t.Helper()
	var out []string
	var cur strings.Builder
	var quote rune
	quoted, in := false, false
	for _, r := range s {
		switch {
		case (r == '\'' || r == '"') && (!quoted || r == quote):
			quoted, in, quote = !quoted, true, r
		case r == ' ' && !quoted:
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if quoted {
		t.Fatalf("unbalanced quote in %q", s)
	}
	if in {
		out = append(out, cur.String())
	}
	return out
}

// TestReadmeHTTPExamples runs every example of README.md's HTTP API section
// that ran against `registry dev` (port 18181), in order, against a
// registry in this process shaped like dev (one partition), and checks the
// answer the README shows: status, every header shown and no other
// (besides Date and Content-Length), and the body, field for field (a
// registered_at only has to be a timestamp). The examples on port 18182
// needed a registry in a particular state (no projector, a stopped
// broker); they are left out and counted.
func TestReadmeHTTPExamples(t *testing.T) {
	t.Parallel()
	examples := readmeExamples(t)
	if len(examples) < 20 {
		t.Fatalf("found %d examples in README.md; the parser lost some", len(examples))
	}
	// The examples ran with $TOKEN a caller holding the claim and read
	// scopes.
	const token = "tok-readme-5f1c"
	reg := stacktest.Start(t, stacktest.Options{Partitions: 1, Projectors: 1, APIs: 1,
		Tokens: newStore(t, tokensFile(t, tokenLine("readme", "claim,read", token)))})
	base := reg.APIs[0].URL
	skipped := 0
	for _, e := range examples {
		if !strings.HasPrefix(e.url, "http://127.0.0.1:18181") {
			skipped++
			continue
		}
		url := base + strings.TrimPrefix(e.url, "http://127.0.0.1:18181")
		deadline := time.Now().Add(15 * time.Second)
		for {
			status, headers, body := exampleRequest(t, e.method, url, e.body, e.request, token)
			// A status URL right after a 202 may still say 404 for a moment.
			if status == "404 Not Found" && e.status != status && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			checkExample(t, e, status, headers, body)
			break
		}
	}
	t.Logf("checked %d examples; %d need a registry in another state and were not run", len(examples)-skipped, skipped)
}

func exampleRequest(t *testing.T, method, url string, body []byte, headers map[string]string, token string) (string, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded") // what curl -d sends unless told otherwise
	}
	for k, v := range headers {
		req.Header.Set(k, strings.ReplaceAll(v, "$TOKEN", token))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	h := resp.Header.Clone()
	if resp.Close {
		h.Set("Connection", "close")
	}
	return resp.Status, h, b
}

func checkExample(t *testing.T, e readmeExample, status string, headers http.Header, body []byte) {
	t.Helper()
	if status != e.status {
		t.Errorf("%s\n  status %q, README shows %q (body %s)", e.command, status, e.status, body)
	}
	for k, v := range e.headers {
		if got := headers.Get(k); got != v {
			t.Errorf("%s\n  header %s: %q, README shows %q", e.command, k, got, v)
		}
	}
	for k := range headers {
		if _, shown := e.headers[k]; !shown && k != "Date" && k != "Content-Length" {
			t.Errorf("%s\n  header %s: %q is not shown in README", e.command, k, headers.Get(k))
		}
	}
	var got, want map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Errorf("%s\n  body %q: %v", e.command, body, err)
		return
	}
	if err := json.Unmarshal([]byte(e.answer), &want); err != nil {
		t.Errorf("%s\n  README's body %q: %v", e.command, e.answer, err)
		return
	}
	for _, m := range []map[string]any{got, want} {
		if at, ok := m["registered_at"].(string); ok {
			if _, err := time.Parse(time.RFC3339Nano, at); err == nil {
				m["registered_at"] = "a timestamp"
			}
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s\n  body %s\n  README %s", e.command, body, e.answer)
	}
}
