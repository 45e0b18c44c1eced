package stack_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/usernameregistry/registry/internal/app/stack"
)

// serveLimited serves a handler that reads the whole body, as the claim
// handler does, with short limits; it returns the address.
func serveLimited(t *testing.T, l stack.Limits) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
			return
		}
		// Then wait like a claim awaiting its decision: the lifted body
		// deadline must not cut this.
		select {
		case <-time.After(2 * l.BodyTimeout):
			fmt.Fprint(w, "decided")
		case <-r.Context().Done():
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- stack.ServeWith(ctx, ln, h, stack.ServeConfig{Limits: l}) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

var short = stack.Limits{ReadHeaderTimeout: 300 * time.Millisecond, BodyTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond, MaxHeaderBytes: 4 << 10}

// closedWithin reports whether the server closes c within d.
func closedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d)) //nolint:errcheck
	_, err := io.Copy(io.Discard, c)
	return err == nil // EOF: closed by the server; a timeout is an error
}

func TestStalledBodyIsClosed(t *testing.T) {
	t.Parallel()
	addr := serveLimited(t, short)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /v1/claims HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
	start := time.Now()
	if !closedWithin(c, 3*time.Second) {
		t.Fatalf("a connection whose body stalled was still open after 3s (body timeout %v)", short.BodyTimeout)
	}
	t.Logf("closed after %v", time.Since(start).Round(time.Millisecond))
}

func TestStalledHeaderIsClosed(t *testing.T) {
	t.Parallel()
	addr := serveLimited(t, short)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /v1/claims HTTP/1.1\r\nHost: x\r\n")
	if !closedWithin(c, 3*time.Second) {
		t.Fatal("a connection whose header stalled was still open after 3s")
	}
}

func TestIdleConnectionIsClosed(t *testing.T) {
	t.Parallel()
	addr := serveLimited(t, short)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !closedWithin(c, 3*time.Second) {
		t.Fatal("an idle keep-alive connection was still open after 3s")
	}
}

func TestBodyDeadlineSparesWaitingRequests(t *testing.T) {
	t.Parallel()
	addr := serveLimited(t, short)
	resp, err := http.Post("http://"+addr+"/v1/claims", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "decided" {
		t.Fatalf("a request waiting past the body timeout after reading its body: %d %q", resp.StatusCode, body)
	}
}

func TestHeaderBlockIsBounded(t *testing.T) {
	t.Parallel()
	addr := serveLimited(t, short)
	for _, h2c := range []bool{false, true} {
		tr := &http.Transport{}
		if h2c {
			tr.Protocols = new(http.Protocols)
			tr.Protocols.SetUnencryptedHTTP2(true)
		}
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		req.Header.Set("X-Big", strings.Repeat("a", 64<<10))
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
				t.Errorf("h2c=%v: a 64 KiB header got %d", h2c, resp.StatusCode)
			}
		} else if !h2c {
			t.Errorf("a 64 KiB header: %v, want 431", err)
		} else {
			// HTTP/2: the header list past the advertised limit ends the
			// connection (GOAWAY) before any handler runs.
			t.Logf("h2c: %v", err)
		}
		tr.CloseIdleConnections()
	}
}

// TestStalledH2CStreamIsEnded: an h2c stream that sends its headers and
// never its body is ended by the body timeout.
func TestStalledH2CStreamIsEnded(t *testing.T) {
	t.Parallel()
	addr := serveLimited(t, short)
	tr := &http.Transport{}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	pr, pw := io.Pipe()
	defer pw.Close()
	req, _ := http.NewRequest("POST", "http://"+addr+"/v1/claims", pr)
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
	if err == nil {
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("stalled h2c stream: HTTP/%d %d", resp.ProtoMajor, resp.StatusCode)
		}
	} else if time.Since(start) >= 5*time.Second {
		t.Fatalf("stalled h2c stream not ended by the server: %v", err)
	}
	t.Logf("ended after %v", time.Since(start).Round(time.Millisecond))
}
