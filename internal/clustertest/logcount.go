package clustertest

import (
	"bytes"
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
	// f is the log, opened by the first count that finds it and kept
	// open until close: a wait polls every eventually.Poll, and opening,
	// seeking and closing the file at each poll was four of the five
	// system calls of a poll that found nothing new (with seven cluster
	// tests in flight, hundreds a second in a VM where each costs tens
	// of microseconds of kernel time; docs/testing.md, "Where the cluster
	// packages' CPU goes").
	f *os.File

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
	if lc.f == nil {
		f, err := os.Open(lc.path)
		if err != nil {
			return c.n
		}
		lc.f = f
	}
	lc.read(lc.f, []byte(s), c)
	return c.n
}

// close closes the log if a count opened it; a later count opens it again.
func (lc *logCounter) close() {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if lc.f != nil {
		lc.f.Close()
		lc.f = nil
	}
}

// read counts the whole lines from c.off to f's end into c (ReadAt: the
// strings' offsets differ, and one file serves them all). A line
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
		m, err := f.ReadAt(lc.chunk[held:], c.off+int64(held))
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
