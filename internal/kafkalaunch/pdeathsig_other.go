//go:build unix && !linux

package kafkalaunch

import "syscall"

// setParentDeathSignal is a no-op where the kernel has no parent-death
// signal; there a broker outlives a killed caller and must be stopped by
// hand.
func setParentDeathSignal(*syscall.SysProcAttr) {}
