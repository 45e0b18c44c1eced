package chaos

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// proc is a supervised child process: it is restarted whenever it exits,
// unless the injector holds it down.
type proc struct {
	name string
	bin  string
	args []string
	env  []string
	log  io.Writer
	// nextEnv, when set, adds variables for the next start only (a
	// failpoint for one incarnation).
	nextEnv []string
	// armed, when set, adds variables to every start until disarmed (a
	// failpoint that must survive starts that fail, as they do while the
	// broker is down).
	armed  []string
	onExit func(name string, err error)

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	down   bool // held down by the injector
	wake   chan struct{}
	starts int
}

func newProc(name, bin string, args, env []string, log io.Writer) *proc {
	return &proc{name: name, bin: bin, args: args, env: env, log: log, wake: make(chan struct{}, 1)}
}

// supervise runs the process until ctx ends, restarting it after exits.
func (p *proc) supervise(ctx context.Context) {
	for ctx.Err() == nil {
		if !p.awaitUp(ctx) {
			return
		}
		cmd, exited, err := p.start()
		if err != nil {
			fmt.Fprintf(p.log, "chaos: starting %s: %v\n", p.name, err)
			sleep(ctx, time.Second)
			continue
		}
		err = cmd.Wait()
		close(exited)
		if p.onExit != nil && ctx.Err() == nil {
			p.onExit(p.name, err)
		}
		sleep(ctx, 300*time.Millisecond)
	}
}

func (p *proc) awaitUp(ctx context.Context) bool {
	for {
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if !down {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-p.wake:
		}
	}
}

func (p *proc) start() (*exec.Cmd, chan struct{}, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(append(append(append(os.Environ(), p.env...), p.armed...), p.nextEnv...), "CHAOS_NODE="+p.name)
	p.nextEnv = nil
	cmd.Stdout, cmd.Stderr = p.log, p.log
	// Die with the harness, whatever happens to it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	p.starts++
	fmt.Fprintf(p.log, "chaos: started %s (pid %d, start %d)\n", p.name, cmd.Process.Pid, p.starts)
	p.cmd, p.exited = cmd, make(chan struct{})
	return cmd, p.exited, nil
}

// pid is the running process's id, or 0.
func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	select {
	case <-p.exited:
		return 0
	default:
		return p.cmd.Process.Pid
	}
}

// stopped reports whether the running process is stopped (state T in
// /proc/<pid>/stat: it got SIGSTOP, from the injector or from itself).
func (p *proc) stopped() bool {
	pid := p.pid()
	if pid == 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and may
	// hold anything, so look after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'T'
}

// signal sends sig to the running process, if any, and returns its exit
// channel.
func (p *proc) signal(sig syscall.Signal) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return closed
	}
	select {
	case <-p.exited:
		return closed
	default:
	}
	p.cmd.Process.Signal(sig) //nolint:errcheck // it may have exited meanwhile
	return p.exited
}

var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// kill holds the process down and kills it with SIGKILL.
func (p *proc) kill() {
	p.mu.Lock()
	p.down = true
	p.mu.Unlock()
	p.signal(syscall.SIGCONT) // a stopped process dies on SIGKILL too, but be explicit
	<-p.signal(syscall.SIGKILL)
}

// up lets the supervisor start the process again, with extra env for
// that start.
func (p *proc) up(env ...string) {
	p.mu.Lock()
	p.down, p.nextEnv = false, env
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// arm adds env to every start from now on, until disarm.
func (p *proc) arm(env ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armed = env
}

func (p *proc) disarm() { p.arm() }

// setEnv replaces the environment of every start from now on.
func (p *proc) setEnv(env []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.env = env
}

// stop holds the process down and stops it gracefully (SIGTERM), killing
// it after timeout.
func (p *proc) stop(timeout time.Duration) {
	p.mu.Lock()
	p.down = true
	p.mu.Unlock()
	p.signal(syscall.SIGCONT)
	exited := p.signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(timeout):
		<-p.signal(syscall.SIGKILL)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
