package store

import (
	"errors"
	"os"
	"syscall"
)

// allocate reserves size bytes for f without writing them.
func allocate(f *os.File, size int64) error {
	err := syscall.Fallocate(int(f.Fd()), 0, 0, size)
	if errors.Is(err, syscall.EOPNOTSUPP) {
		return errors.ErrUnsupported
	}
	return err
}
