//go:build linux

package kafkalaunch

import "syscall"

// setParentDeathSignal asks the kernel to kill the JVM if we die without
// stopping it, so a killed test binary does not leave a broker holding its
// ports and a few hundred megabytes.
//
// The signal is tied to the OS thread that forked the child, not the whole
// process; the Go runtime only retires threads whose goroutine exits while
// locked with runtime.LockOSThread, which this package never does.
func setParentDeathSignal(attr *syscall.SysProcAttr) {
	attr.Pdeathsig = syscall.SIGKILL
}
