//go:build !unix

package memtrim

import "time"

// processCPU is not read here: a trim's cost is its wall-clock time.
func processCPU() (time.Duration, bool) { return 0, false }
