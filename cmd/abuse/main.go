// Command abuse measures how an API node holds under the cheap abuses
// listed in issue 17, so docs/benchmarks.md can give figures before and
// after the listener limits. It is a measuring tool, not part of the
// product image. Point it at a server started on this machine (it reads
// the server's memory and descriptors from /proc).
//
//	abuse -probe h2c-headers   -url http://127.0.0.1:8080 -pid PID
//	abuse -probe stalled-bodies -url http://127.0.0.1:8080 -pid PID
//	abuse -probe ui-subscribers -url http://127.0.0.1:8080 -ui http://127.0.0.1:9090 -token T
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	probe := flag.String("probe", "", "h2c-headers, stalled-bodies or ui-subscribers")
	api := flag.String("url", "http://127.0.0.1:8080", "the API's base URL")
	ui := flag.String("ui", "", "the base URL serving /ui/events (default: -url)")
	pid := flag.Int("pid", 0, "the server's process id, to read its RSS and descriptors")
	token := flag.String("token", "", "bearer token for claims")
	n := flag.Int("n", 0, "streams or connections to open (default per probe: 200, 1100, 2000)")
	headerBytes := flag.Int("header-bytes", 900<<10, "h2c-headers: bytes of header per stream")
	hold := flag.Duration("hold", 15*time.Second, "how long to keep measuring after opening")
	dur := flag.Duration("duration", 10*time.Second, "ui-subscribers: how long to send rejected claims")
	flag.Parse()
	var err error
	switch *probe {
	case "h2c-headers":
		err = h2cHeaders(*api, *token, *pid, cmpInt(*n, 200), *headerBytes, *hold)
	case "stalled-bodies":
		err = stalledBodies(*api, *token, *pid, cmpInt(*n, 1100), *hold)
	case "ui-subscribers":
		err = uiSubscribers(*api, cmpStr(*ui, *api), *token, cmpInt(*n, 2000), *dur)
	default:
		err = fmt.Errorf("unknown -probe %q", *probe)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "abuse:", err)
		os.Exit(1)
	}
}

func cmpInt(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

func cmpStr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// rssMB is the server's resident memory, from /proc/PID/status.
func rssMB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.Atoi(f[1])
			return float64(kb) / 1024
		}
	}
	return -1
}

func fds(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

func h2cHeaders(api, token string, pid, n, size int, hold time.Duration) error {
	tr := &http.Transport{MaxConnsPerHost: 1}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: tr}
	pad := strings.Repeat("a", size)
	fmt.Printf("before: rss %.0f MB\n", rssMB(pid))
	var refused, open atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	var pipes []*io.PipeWriter
	for range n {
		pr, pw := io.Pipe()
		pipes = append(pipes, pw)
		req, _ := http.NewRequest("POST", api+"/v1/claims", pr)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Pad", pad)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		wg.Go(func() {
			open.Add(1)
			resp, err := client.Do(req)
			open.Add(-1)
			if err != nil {
				refused.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			io.Copy(io.Discard, resp.Body) //nolint:errcheck
			resp.Body.Close()
		})
	}
	start := time.Now()
	for t := time.Second; t <= hold; t += 2 * time.Second {
		time.Sleep(time.Until(start.Add(t)))
		fmt.Printf("after %2.0fs: rss %.0f MB, streams still open %d, refused or ended with an error %d\n", t.Seconds(), rssMB(pid), open.Load(), refused.Load())
	}
	if e := firstErr.Load(); e != nil {
		fmt.Printf("first error: %s\n", e)
	}
	for _, pw := range pipes {
		pw.Close()
	}
	tr.CloseIdleConnections()
	return nil
}

func stalledBodies(api, token string, pid, n int, hold time.Duration) error {
	u, err := url.Parse(api)
	if err != nil {
		return err
	}
	fmt.Printf("before: descriptors %d, rss %.0f MB\n", fds(pid), rssMB(pid))
	var conns []net.Conn
	for range n {
		c, err := net.Dial("tcp", u.Host)
		if err != nil {
			fmt.Printf("dial: %v after %d connections\n", err, len(conns))
			break
		}
		auth := ""
		if token != "" {
			auth = "Authorization: Bearer " + token + "\r\n"
		}
		fmt.Fprintf(c, "POST /v1/claims HTTP/1.1\r\nHost: %s\r\n%sContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", u.Host, auth)
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	start := time.Now()
	for t := time.Second; t <= hold; t += 2 * time.Second {
		time.Sleep(time.Until(start.Add(t)))
		fmt.Printf("after %2.0fs: server descriptors %d, healthz %s\n", t.Seconds(), fds(pid), healthz(api))
	}
	return nil
}

func healthz(api string) string {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	start := time.Now()
	resp, err := c.Get(api + "/healthz")
	if err != nil {
		return "failed: " + err.Error()
	}
	resp.Body.Close()
	return fmt.Sprintf("%d in %v", resp.StatusCode, time.Since(start).Round(time.Millisecond))
}

func uiSubscribers(api, ui, token string, n int, dur time.Duration) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var opened, refused atomic.Int64
	streamClient := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: 0}}
	var ready sync.WaitGroup
	for range n {
		ready.Add(1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", ui+"/ui/events", nil)
			resp, err := streamClient.Do(req)
			if err != nil || resp.StatusCode != 200 {
				refused.Add(1)
				ready.Done()
				if resp != nil {
					resp.Body.Close()
				}
				return
			}
			opened.Add(1)
			ready.Done()
			io.Copy(io.Discard, resp.Body) //nolint:errcheck
			resp.Body.Close()
		}()
	}
	ready.Wait()
	fmt.Printf("live-page streams: %d open, %d refused\n", opened.Load(), refused.Load())
	claimClient := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	post := func(name, user string) (int, time.Duration) {
		body, _ := json.Marshal(map[string]string{"username": name, "user_id": user})
		req, _ := http.NewRequest("POST", api+"/v1/claims?wait=10s", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		start := time.Now()
		resp, err := claimClient.Do(req)
		if err != nil {
			return 0, time.Since(start)
		}
		io.Copy(io.Discard, resp.Body) //nolint:errcheck
		resp.Body.Close()
		return resp.StatusCode, time.Since(start)
	}
	name := fmt.Sprintf("abuse%d", time.Now().UnixNano()%1e9)
	if code, _ := post(name, "7d3f2b0e-5a61-4c1e-9f5b-2b8c1d4e6a01"); code != 201 && code != 200 {
		return fmt.Errorf("first claim of %s answered %d", name, code)
	}
	var mu sync.Mutex
	var lat []time.Duration
	codes := map[int]int{}
	end := time.Now().Add(dur)
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Go(func() {
			for i := 0; time.Now().Before(end); i++ {
				code, d := post(name, fmt.Sprintf("c4a8e913-2f7d-4b6a-8e15-%012d", w*1_000_000+i))
				mu.Lock()
				lat, codes[code] = append(lat, d), codes[code]+1
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))].Round(100 * time.Microsecond) }
	fmt.Printf("rejected claims: %d in %v = %.0f/s, codes %v, p50 %v, p99 %v\n", len(lat), dur, float64(len(lat))/dur.Seconds(), codes, q(0.5), q(0.99))
	return nil
}
