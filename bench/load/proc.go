package load

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrNoProcess is returned by FindListener when no process it may inspect
// listens on the port.
var ErrNoProcess = errors.New("load: no process found listening on the port")

// RSSKiB reads the resident set size of process pid from
// /proc/PID/status (VmRSS, in KiB). It fails on systems without /proc and
// for processes that are gone.
func RSSKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range bytes.Lines(b) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := strings.Fields(string(rest))
			if len(f) >= 1 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("load: no VmRSS in /proc/%d/status", pid)
}

// FindListener returns the id of the process holding a listening TCP
// socket on port (any address), from /proc/net/tcp{,6} and the processes'
// fd directories. It only sees processes this user may inspect.
func FindListener(port int) (int, error) {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		if err := listenInodes(f, port, inodes); err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, err
		}
	}
	if len(inodes) == 0 {
		return 0, ErrNoProcess
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fds, _ := os.ReadDir(filepath.Join("/proc", p.Name(), "fd"))
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join("/proc", p.Name(), "fd", fd.Name()))
			if err == nil && strings.HasPrefix(link, "socket:[") && inodes[link[8:len(link)-1]] {
				return pid, nil
			}
		}
	}
	return 0, ErrNoProcess
}

// listenInodes adds the inodes of sockets in LISTEN state (0A) on port
// found in one /proc/net/tcp file.
func listenInodes(file string, port int, into map[string]bool) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	want := fmt.Sprintf(":%04X", port)
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		f := strings.Fields(sc.Text())
		if len(f) >= 10 && strings.HasSuffix(f[1], want) && f[3] == "0A" {
			into[f[9]] = true
		}
	}
	return sc.Err()
}

// fdBudget reports how many more files this process may open: the soft
// RLIMIT_NOFILE (Go raises it to the hard limit at start-up) minus the
// descriptors already open, or limit when limit > 0 (tests).
func fdBudget(limit int) (budget int, why string) {
	open := 0
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		open = len(fds)
	}
	if limit > 0 {
		return limit - open, fmt.Sprintf("the configured limit is %d and %d files are open", limit, open)
	}
	return openFileLimit(open)
}

// processFDBudget reports how many more files process pid may open, from
// /proc/PID/limits and /proc/PID/fd; ok is false when they cannot be read.
func processFDBudget(pid int) (budget int, why string, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0, "", false
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, "", false
	}
	for line := range strings.Lines(string(b)) {
		if rest, found := strings.CutPrefix(line, "Max open files"); found {
			f := strings.Fields(rest)
			if len(f) < 1 {
				break
			}
			soft, err := strconv.Atoi(f[0])
			if err != nil {
				return 0, "", false // "unlimited"
			}
			return soft - len(fds), fmt.Sprintf("the broker (pid %d) may open %d files and has %d open", pid, soft, len(fds)), true
		}
	}
	return 0, "", false
}
