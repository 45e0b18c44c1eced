package chaos

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Proxy forwards TCP connections to the broker. The broker advertises the
// proxy's address, so every Kafka client goes through it; faults apply
// only to connections that Faulty says come from a projector process.
type Proxy struct {
	ln     net.Listener
	target string
	// Faulty reports whether the peer at a local TCP port is subject to
	// faults.
	faulty func(peerPort int) bool

	mu      sync.Mutex
	latency time.Duration
	drop    bool
	conns   map[net.Conn]bool // client side → faulty
}

// NewProxy listens on addr and forwards to target.
func NewProxy(addr, target string, faulty func(peerPort int) bool) (*Proxy, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("proxy listening on %s: %w", addr, err)
	}
	p := &Proxy{ln: ln, target: target, faulty: faulty, conns: map[net.Conn]bool{}}
	go p.accept()
	return p, nil
}

// Addr is the proxy's listen address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Close stops the proxy and every connection.
func (p *Proxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

// SetLatency delays every chunk on faulty connections by d (0 heals).
func (p *Proxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latency = d
}

// Drop closes the faulty connections and refuses new ones until Heal.
func (p *Proxy) Drop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.drop = true
	for c, faulty := range p.conns {
		if faulty {
			c.Close()
		}
	}
}

// Heal ends every fault.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.drop, p.latency = false, 0
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.serve(c)
	}
}

func (p *Proxy) serve(c net.Conn) {
	faulty := p.faulty != nil && p.faulty(c.RemoteAddr().(*net.TCPAddr).Port)
	p.mu.Lock()
	if faulty && p.drop {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.conns[c] = faulty
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		c.Close()
	}()
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() { p.pipe(up, c, faulty); done <- struct{}{} }()
	go func() { p.pipe(c, up, faulty); done <- struct{}{} }()
	<-done
}

// pipe copies src to dst, delaying each chunk while latency is set.
func (p *Proxy) pipe(dst, src net.Conn, faulty bool) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if faulty {
				p.mu.Lock()
				d := p.latency
				p.mu.Unlock()
				time.Sleep(d)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// pidOwningPort finds which of pids owns the TCP socket bound to
// 127.0.0.1:port, through /proc: the socket's inode from /proc/net/tcp,
// then the process holding a descriptor on it. It returns 0 when none
// does (or off Linux).
func pidOwningPort(port int, pids []int) int {
	inode := socketInode(port)
	if inode == "" {
		return 0
	}
	want := "socket:[" + inode + "]"
	for _, pid := range pids {
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && l == want {
				return pid
			}
		}
	}
	return 0
}

func socketInode(port int) string {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return ""
	}
	defer f.Close()
	local := fmt.Sprintf("0100007F:%04X", port)
	s := bufio.NewScanner(io.LimitReader(f, 64<<20))
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 9 && fields[1] == local {
			if _, err := strconv.Atoi(fields[9]); err == nil {
				return fields[9]
			}
		}
	}
	return ""
}
