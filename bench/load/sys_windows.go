package load

import (
	"time"

	"golang.org/x/sys/windows"
)

// selfCPU is the CPU time (user + kernel) this process has used.
func selfCPU() time.Duration {
	var creation, exit, kernel, user windows.Filetime
	if err := windows.GetProcessTimes(windows.CurrentProcess(), &creation, &exit, &kernel, &user); err != nil {
		return 0
	}
	// Filetime counts 100 ns intervals; these are durations, not dates.
	ticks := func(f windows.Filetime) int64 { return int64(f.HighDateTime)<<32 | int64(f.LowDateTime) }
	return time.Duration((ticks(kernel) + ticks(user)) * 100)
}

// openFileLimit: Windows has no per-process limit on sockets like
// RLIMIT_NOFILE; memory and ephemeral ports bound them instead.
func openFileLimit(open int) (budget int, why string) {
	return 1 << 30, ""
}
