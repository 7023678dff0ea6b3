//go:build unix

package testport

import (
	"errors"
	"os"
	"syscall"
)

// lock opens path and takes an exclusive flock on it without waiting. ok
// is false when another open file holds it, in this process or another:
// flock locks belong to the open file, so a port this process reserved
// once is not handed out twice either.
func lock(path string) (f *os.File, ok bool, err error) {
	f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return nil, false, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, err
	}
	return f, true, nil
}
