package bridge

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/roost-mqtt/roost/client"
)

// State keeps a bridge's QoS 2 flows in progress, so that a bridge restart
// or a crash of the process delivers each QoS 2 message exactly once on
// the other side (see "Exactly once" in the package doc). Out holds the
// messages forwarded to the remote, In those forwarded to this broker.
// Each record is tagged with the packet identifier the message arrived
// with and kept until that side's PUBREL for it.
type State struct {
	Out, In client.Store
}

// FileState returns a State in dir (created when absent): out.log and
// in.log, each a client.LogStore, an append-only file with one record per
// step of each QoS 2 flow. With sync every record is fsynced, to survive
// a power loss and not only a crash. Close it when no bridge uses it any
// more; one State must not be opened twice at once.
func FileState(dir string, sync bool) (*State, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("bridge state: %w", err)
	}
	out, err := client.OpenLogStore(filepath.Join(dir, "out.log"))
	if err != nil {
		return nil, fmt.Errorf("bridge state: %w", err)
	}
	in, err := client.OpenLogStore(filepath.Join(dir, "in.log"))
	if err != nil {
		out.Close()
		return nil, fmt.Errorf("bridge state: %w", err)
	}
	out.Sync, in.Sync = sync, sync
	return &State{Out: out, In: in}, nil
}

// Close closes the stores that need it (FileState's).
func (s *State) Close() error {
	var errs []error
	for _, st := range []client.Store{s.Out, s.In} {
		if c, ok := st.(io.Closer); ok {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

// MemoryState returns a State in memory: it survives restarts of bridges
// given the same State, not of the process.
func MemoryState() *State {
	return &State{Out: new(client.MemoryStore), In: new(client.MemoryStore)}
}

// taggedOnly keeps the records of tagged (QoS 2) publishes only: QoS 1 is
// at least once by design, and needs no record of its own (the message
// waits in the session it came from until the other side acknowledged
// it).
type taggedOnly struct{ client.Store }

func (s taggedOnly) Put(r client.StoredPublish) error {
	if r.Tag == 0 {
		return nil
	}
	return s.Store.Put(r)
}

// restoredSet is the tagged publishes a client found in its Store at New,
// by tag, until the message with that tag arrives again or the session it
// came from turns out to be lost.
type restoredSet struct {
	mu sync.Mutex
	m  map[uint64]client.RestoredPublish
}

func newRestoredSet(rs []client.RestoredPublish) *restoredSet {
	s := &restoredSet{m: make(map[uint64]client.RestoredPublish, len(rs))}
	for _, r := range rs {
		s.m[r.Tag] = r
	}
	return s
}

// take returns and removes the record of tag.
func (s *restoredSet) take(tag uint64) (client.RestoredPublish, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.m[tag]
	delete(s.m, tag)
	return r, ok
}

// clear forgets every record: the session whose packet identifiers the
// tags are was lost, so a new message may come with any of them. The
// completed ones are deleted from the store of c; those in progress
// complete unmatched.
func (s *restoredSet) clear(c *client.Client) {
	s.mu.Lock()
	m := s.m
	s.m = map[uint64]client.RestoredPublish{}
	s.mu.Unlock()
	for tag, r := range m {
		if r.Completed {
			c.Forget(tag)
		}
	}
}
