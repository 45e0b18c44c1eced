//go:build linux

package pglaunch

import "syscall"

// setParentDeathSignal asks the kernel to send postgres SIGINT (fast
// shutdown) if we die without stopping it, so a killed `registry dev` or test
// binary does not leave a server holding the data directory and port.
//
// The signal is tied to the OS thread that forked the child, not the whole
// process; the Go runtime only retires threads whose goroutine exits while
// locked with runtime.LockOSThread, which this package never does.
func setParentDeathSignal(attr *syscall.SysProcAttr) {
	attr.Pdeathsig = syscall.SIGINT
}
