package main

import "golang.org/x/sys/unix"

// monotonicNs reads CLOCK_MONOTONIC: system-wide on Linux, so the times in message bodies are
// comparable in any process of the machine (as the bodies of the earlier Python generator were).
func monotonicNs() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) // cannot fail for this clock
	return ts.Nano()
}
