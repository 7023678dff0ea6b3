//go:build !linux

package store

import (
	"errors"
	"os"
)

// allocate is not available: makeBallast writes the bytes.
func allocate(*os.File, int64) error { return errors.ErrUnsupported }
