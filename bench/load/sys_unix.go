//go:build unix

package load

import (
	"fmt"
	"syscall"
	"time"
)

// selfCPU is the CPU time (user + system) this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// openFileLimit is how many more files this process may open given open
// ones: the soft RLIMIT_NOFILE (Go raises it to the hard limit at
// start-up) minus open.
func openFileLimit(open int) (budget int, why string) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 1 << 30, ""
	}
	return int(rl.Cur) - open, fmt.Sprintf("the open-file limit (RLIMIT_NOFILE) is %d (hard %d) and %d files are open", rl.Cur, rl.Max, open)
}
