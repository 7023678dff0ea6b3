package clustertest

import (
	"bytes"
	"io"
	"os"
	"sync"
)

// logCounter counts the lines of an append-only log that contain a given
// string, reading each byte of the file once per string however often it
// is asked. The waits poll a node's log every few milliseconds for up to a
// minute while the log grows to megabytes (a node adopting thousands of
// sessions logs a line for each); reading the whole file at every poll
// cost the suite's busiest package a large share of its test process's
// CPU. The log is only ever appended to, across restarts too, so what was
// counted once stays counted.
type logCounter struct {
	path string

	mu    sync.Mutex
	seen  map[string]*lineCount
	chunk []byte // read buffer, reused
}

// lineCount is how far the log was read for one string: off is the end of
// the last whole line read (a line still being written is read again next
// time), n the lines up to off that contain the string.
type lineCount struct {
	off int64
	n   int
}

func newLogCounter(path string) *logCounter {
	return &logCounter{path: path, seen: map[string]*lineCount{}}
}

// count returns how many whole lines of the log contain s (0 if the file
// cannot be opened yet).
func (lc *logCounter) count(s string) int {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	c := lc.seen[s]
	if c == nil {
		c = &lineCount{}
		lc.seen[s] = c
	}
	f, err := os.Open(lc.path)
	if err != nil {
		return c.n
	}
	defer f.Close()
	if _, err := f.Seek(c.off, io.SeekStart); err != nil {
		return c.n
	}
	lc.read(f, []byte(s), c)
	return c.n
}

// read counts the whole lines from f's offset to its end into c. A line
// longer than the buffer is read whole by growing it.
func (lc *logCounter) read(f *os.File, s []byte, c *lineCount) {
	if lc.chunk == nil {
		lc.chunk = make([]byte, 256<<10)
	}
	held := 0 // bytes of an unfinished line at the start of chunk
	for {
		if held == len(lc.chunk) {
			lc.chunk = append(lc.chunk, make([]byte, len(lc.chunk))...)
		}
		m, err := f.Read(lc.chunk[held:])
		buf := lc.chunk[:held+m]
		end := bytes.LastIndexByte(buf, '\n') + 1
		c.n += linesWith(buf[:end], s)
		c.off += int64(end)
		held = copy(lc.chunk, buf[end:])
		if err != nil || m == 0 {
			return
		}
	}
}

// linesWith counts the lines of b (whole lines, each ending in '\n') that
// contain s. It searches for s rather than splitting b into lines, which
// is most of the cost when few lines match; a line matches once however
// often s occurs in it, and s with a newline matches none, as no line
// holds one.
func linesWith(b, s []byte) int {
	if bytes.IndexByte(s, '\n') >= 0 {
		return 0
	}
	n := 0
	for len(b) > 0 {
		i := bytes.Index(b, s)
		if i < 0 {
			break
		}
		n++
		b = b[i+len(s):]
		b = b[bytes.IndexByte(b, '\n')+1:]
	}
	return n
}
