package cluster

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// A restarted node's restored sessions and what was held for it.
//
// The others held for this node from when they saw it gone, after its
// last heartbeat; restarted, it reads what they held only in its
// settle's catch-up (onSettled), seconds later under load, or much later
// when its own follower cannot reach its consumer. Its restored sessions
// write ops meanwhile (a publish here queued for them, a client's acks),
// stamped with their real time, and a claim elsewhere that reads the
// session from the stream reads every held subject from the last op: the
// holds before it, never applied here, were read by nobody
// (test/jepsen TestClusterFull seed 41, session 22: ps0 19 and ps2 38
// acknowledged messages lost; bench/jepsen/RESULTS.md ps41b;
// cluster/repro TestReproRestartedOpsBeforeHeld). A pause is the same
// (silence.go), and a process that did not run has no last heartbeat in
// memory to date its silence from: the file's modification time keeps
// it. Until the settle's catch-up read the held subject to its end, the
// restored node's ops count as made then (silenceMark.begin), so readers
// read from before every hold made for this node while it was down.

// lastBeatFile is the file under Config.Data whose modification time is
// this node's last heartbeat.
const lastBeatFile = "last-heartbeat"

// noteBeat sets the file's time to now; one system call a heartbeat.
func noteBeat(dir string, now time.Time) error {
	path := filepath.Join(dir, lastBeatFile)
	err := os.Chtimes(path, now, now)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.WriteFile(path, nil, 0o600); err == nil {
			err = os.Chtimes(path, now, now)
		}
	}
	return err
}

// lastBeat returns when the previous process of this node last sent a
// heartbeat; false when none did (a new node) or the file is unreadable.
func lastBeat(dir string) (time.Time, bool) {
	fi, err := os.Stat(filepath.Join(dir, lastBeatFile))
	if err != nil {
		return time.Time{}, false
	}
	return fi.ModTime(), true
}
