//go:build !unix

package memtrim

import "time"

// processCPU is unknown here: trims are charged with the runtime's own
// estimate alone.
func processCPU() (time.Duration, bool) { return 0, false }
