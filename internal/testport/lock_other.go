//go:build !unix

package testport

import "os"

// lock has no cross-process lock to take here: Reserve falls back to
// bind(":0") through the error.
func lock(string) (*os.File, bool, error) { return nil, false, errNoLock }
