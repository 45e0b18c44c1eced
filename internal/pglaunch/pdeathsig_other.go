//go:build unix && !linux

package pglaunch

import "syscall"

// setParentDeathSignal is a no-op where the kernel has no parent-death
// signal; there the server outlives a killed caller and must be stopped by
// hand (its pid is in postmaster.pid).
func setParentDeathSignal(*syscall.SysProcAttr) {}
