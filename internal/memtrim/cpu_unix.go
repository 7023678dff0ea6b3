//go:build unix

package memtrim

import (
	"syscall"
	"time"
)

// processCPU is the CPU time (user + system) the process has used, as the
// kernel counts it: only time on a core, never time waiting for one.
func processCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
