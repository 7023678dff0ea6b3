// Package bridgeset runs the bridges of a roost serve: those of the
// configuration file, reloaded on SIGHUP, and those added, changed and
// removed through the admin API (httpapi.BridgeAdmin), which it keeps in
// the store's directory. Both kinds of change go through one function,
// apply, that compares the entries by name.
package bridgeset

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/roost-mqtt/roost/bridge"
	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/cluster"
	"github.com/roost-mqtt/roost/internal/config"
)

// APIBridgesFile is where the bridges added through the admin API are
// kept, in the store's directory: the configuration file is the user's,
// and Roost never rewrites it (docs/bridges.md).
const APIBridgesFile = "bridges-api.json"

// Set is the running bridges of roost serve: those of the
// configuration file, reloaded on SIGHUP, and those of the admin API,
// kept in APIBridgesFile. Both paths end in apply, which starts, restarts
// and stops bridges by comparing entries by name. mu serializes them.
type Set struct {
	srv *broker.Server
	log *slog.Logger
	// node and cluster are this node's name and its cluster's on a
	// cluster node, "" on a single one (bridge.Config.Node).
	node, cluster string
	// apiPath is the file of the API's bridges; "" (--memory) keeps them
	// for the process's life only, like everything else then.
	apiPath string
	// stateDir holds each bridge's QoS 2 state (bridge.FileState) in a
	// directory of its name; "" (--memory) keeps it in states.
	stateDir string
	states   map[string]*bridge.State

	mu     sync.Mutex
	file   []config.Bridge // the configuration file's entries
	api    []apiBridge     // the admin API's entries, in the order added
	list   []runningBridge // in configuration order: file, then API
	closed bool
	done   chan struct{} // closed by Close

	stopWatch func()
}

type runningBridge struct {
	cfg config.Bridge
	b   *bridge.Bridge
	// pending is a changed entry with reload lazy (mosquitto's
	// bridge_reload_type lazy), applied when b's remote connection drops.
	pending *config.Bridge
	// lazy is set for start lazy bridges (lazyTick).
	lazy *lazyState
}

// apiBridge is an entry of the admin API: parsed, and as sent (with its
// password), which is what APIBridgesFile keeps.
type apiBridge struct {
	cfg config.Bridge
	raw json.RawMessage
}

// apiBridgesJSON is APIBridgesFile's content.
type apiBridgesJSON struct {
	Bridges []json.RawMessage `json:"bridges"`
}

// Start starts the bridges cfg names on srv, and those the admin API
// added before, and, when hup is not nil, reloads cfg.Path's bridges each
// time it receives. A bridge whose configuration cannot be used (unreadable TLS
// files, a client id twice) stops the server from starting: a bridge that
// silently is not there loses messages. A remote that is down is not an
// error: the bridge connects when it can and queues meanwhile.
func Start(ctx context.Context, cfg *config.Config, srv *broker.Server, logger *slog.Logger, hup <-chan struct{}) (*Set, error) {
	s := &Set{srv: srv, log: logger, stopWatch: func() {}, file: cfg.Bridges, states: map[string]*bridge.State{}, done: make(chan struct{})}
	if cfg.Cluster.Enabled() {
		s.node, s.cluster = cfg.Cluster.Node, cmp.Or(cfg.Cluster.Name, cluster.DefaultName)
	}
	if !cfg.Store.Memory {
		s.apiPath = filepath.Join(cfg.Store.Data, APIBridgesFile)
		s.stateDir = filepath.Join(cfg.Store.Data, "bridges")
		api, err := loadAPIBridges(s.apiPath)
		if err != nil {
			return nil, err
		}
		s.api = api
	}
	all, err := s.combine(s.file, s.api)
	if err != nil {
		return nil, err
	}
	for i := range all {
		rb, err := s.start(ctx, all[i])
		if err != nil {
			s.Close(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("bridges[%d]: %w", i, err)
		}
		s.list = append(s.list, rb)
	}
	if hup != nil && cfg.Path != "" {
		s.watch(ctx, cfg.Path, hup)
	}
	return s, nil
}

// loadAPIBridges reads APIBridgesFile; a missing file is no bridges, a
// damaged one an error naming it (starting without its bridges would
// leave their messages queued for nobody, unseen).
func loadAPIBridges(path string) ([]apiBridge, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bridges of the admin API: %w", err)
	}
	var f apiBridgesJSON
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("bridges of the admin API: %s: %w", path, err)
	}
	var out []apiBridge
	for i, raw := range f.Bridges {
		c, err := config.ParseBridge(fmt.Sprintf("%s: bridges[%d]", path, i), raw)
		if err != nil {
			return nil, fmt.Errorf("bridges of the admin API: %w", err)
		}
		out = append(out, apiBridge{cfg: c, raw: raw})
	}
	return out, nil
}

// saveAPIBridges writes api to s.apiPath atomically (temporary file,
// fsync, rename, fsync of the directory): a crash leaves the old list or
// the new one. The file holds passwords, so only its owner reads it.
func (s *Set) saveAPIBridges(api []apiBridge) error {
	if s.apiPath == "" {
		return nil
	}
	f := apiBridgesJSON{Bridges: []json.RawMessage{}}
	for _, a := range api {
		f.Bridges = append(f.Bridges, a.raw)
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(s.apiPath, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("saving the admin API's bridges: %w", err)
	}
	return nil
}

func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename: nothing there
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(perm)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return err
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}

// combine returns the file's bridges followed by the API's, refusing a
// name both use and settings that cannot work together.
func (s *Set) combine(file []config.Bridge, api []apiBridge) ([]config.Bridge, error) {
	all := slices.Clone(file)
	for _, a := range api {
		if slices.ContainsFunc(file, func(f config.Bridge) bool { return f.Name == a.cfg.Name }) {
			return nil, fmt.Errorf("bridge %s is both in the configuration file and added through the admin API: remove one (DELETE /api/bridges/%s)",
				a.cfg.Name, a.cfg.Name)
		}
		all = append(all, a.cfg)
	}
	if err := (&config.Config{Bridges: all}).CheckBridges(); err != nil {
		return nil, err
	}
	return all, nil
}

func (s *Set) start(ctx context.Context, c config.Bridge) (runningBridge, error) {
	s.warnSharedIDs(c)
	b, err := s.newBridge(c)
	if err != nil {
		return runningBridge{}, err
	}
	if c.StartLazy {
		// Dormant: the local session exists and queues; lazyTick starts
		// the bridge when enough waits there.
		err := b.Prepare(ctx)
		b.Close(context.WithoutCancel(ctx))
		if err != nil && s.node == "" {
			return runningBridge{}, err
		}
		ls := &lazyState{dormant: true}
		if err != nil {
			// A cluster node without quorum cannot record the session's
			// owner yet; like a running bridge (bridge.Start), the lazy
			// one waits for it rather than keep the node from starting.
			s.log.Warn("lazy bridge: this broker did not accept its local session yet (on a cluster node: no quorum); trying again in the background",
				"bridge", c.Name, "err", err)
			s.supervise(ls, c, true)
			return runningBridge{cfg: c, b: b, lazy: ls}, nil
		}
		s.supervise(ls, c, false)
		s.log.Info("bridge dormant until messages wait for it (start lazy)", "bridge", c.Name, "threshold", c.Threshold)
		return runningBridge{cfg: c, b: b, lazy: ls}, nil
	}
	if err := b.Start(ctx); err != nil {
		b.Close(context.WithoutCancel(ctx))
		return runningBridge{}, err
	}
	s.log.Info("bridge started", "bridge", b.Name(), "remote", c.Addresses, "topics", len(c.Topics))
	return runningBridge{cfg: c, b: b}, nil
}

func (s *Set) newBridge(c config.Bridge) (*bridge.Bridge, error) {
	bc, err := s.options(c, s.log)
	if err != nil {
		return nil, err
	}
	if bc.State, err = s.state(c.Name); err != nil {
		return nil, err
	}
	return bridge.New(s.srv, bc)
}

// options is c's bridge.Config on this node.
func (s *Set) options(c config.Bridge, logger *slog.Logger) (bridge.Config, error) {
	bc, err := c.Options(logger)
	bc.Node, bc.Cluster = s.node, s.cluster
	return bc, err
}

// warnSharedIDs warns, on a cluster node, about a bridge whose client id
// is set: every node runs the bridges of the configuration they share,
// and two nodes with one id take each other's connections over, on the
// remote and (the local id) in the cluster, over and over. One node
// cannot see the others' configurations, so this is said at each start;
// the bridge logs an error when its local session is taken over.
func (s *Set) warnSharedIDs(c config.Bridge) {
	if s.node == "" || (c.ClientID == "" && c.LocalClientID == "") {
		return
	}
	s.log.Warn("bridge client id set explicitly on a cluster node: if another node runs this bridge with the same id, the two take each other's connection over endlessly; leave client_id and local_client_id unset (their defaults include the node name) or give each node its own (docs/bridges.md)",
		"bridge", c.Name, "client_id", c.ClientID, "local_client_id", c.LocalClientID, "node", s.node)
}

// lazyPoll is how often a lazy bridge's queue and activity are looked at.
const lazyPoll = 200 * time.Millisecond

// lazyState is a lazy bridge's (mosquitto's start_type lazy) life: dormant
// with its local session queuing, or running since the last activity.
type lazyState struct {
	dormant bool
	count   uint64    // forwarded in and out when last looked at
	active  time.Time // when count or the queue last moved
}

// supervise runs lazyTick for ls until its entry goes or the set closes;
// with prepare, it first makes the bridge's local session (Prepare) until
// the broker accepts it. Until then the session does not exist here, so
// lazyTick finds nothing waiting and leaves the bridge dormant.
func (s *Set) supervise(ls *lazyState, c config.Bridge, prepare bool) {
	go func() {
		if prepare && !s.prepareLazy(ls, c) {
			return
		}
		t := time.NewTicker(lazyPoll)
		defer t.Stop()
		for {
			select {
			case <-t.C:
			case <-s.done:
				return
			}
			if !s.lazyTick(ls, c) {
				return
			}
		}
	}()
}

// prepareLazy tries, with backoff, to make the local session of the lazy
// bridge c, outside s.mu (each try may wait for the cluster for seconds).
// It reports false if the set closed or the entry went first.
func (s *Set) prepareLazy(ls *lazyState, c config.Bridge) bool {
	for delay := time.Second; ; delay = min(2*delay, 30*time.Second) {
		select {
		case <-time.After(delay):
		case <-s.done:
			return false
		}
		s.mu.Lock()
		gone := s.closed || !slices.ContainsFunc(s.list, func(rb runningBridge) bool { return rb.lazy == ls })
		var b *bridge.Bridge
		var err error
		if !gone {
			b, err = s.newBridge(c) // s.states is s.mu's
		}
		s.mu.Unlock()
		if gone {
			return false
		}
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err = b.Prepare(ctx)
			b.Close(ctx)
			cancel()
		}
		if err == nil {
			s.log.Info("lazy bridge: local session made; dormant until messages wait for it", "bridge", c.Name)
			return true
		}
		s.log.Debug("lazy bridge: local session not accepted yet", "bridge", c.Name, "err", err)
	}
}

// lazyTick starts a dormant bridge once Threshold messages wait in its
// local session, and stops a running one after IdleTimeout in which
// nothing was forwarded or waiting. It reports whether the entry is still
// there.
func (s *Set) lazyTick(ls *lazyState, c config.Bridge) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.list, func(rb runningBridge) bool { return rb.lazy == ls })
	if s.closed || i < 0 {
		return false
	}
	rb := &s.list[i]
	if ls.dormant {
		cs, _, ok := s.srv.Client(rb.b.LocalClientID())
		if !ok || cs.Queued+cs.Inflight < c.Threshold {
			return true
		}
		b, err := s.newBridge(c)
		if err == nil {
			if err = b.Start(context.Background()); err != nil {
				b.Close(context.Background())
			}
		}
		if err != nil {
			s.log.Error("lazy bridge not started", "bridge", c.Name, "err", err)
			return true
		}
		s.log.Info("bridge started: messages wait for it (start lazy)", "bridge", c.Name, "waiting", cs.Queued+cs.Inflight)
		rb.b, ls.dormant, ls.count, ls.active = b, false, 0, time.Now()
		return true
	}
	st := rb.b.Stats()
	if n := st.ForwardedOut + st.ForwardedIn; n != ls.count || st.Queued > 0 {
		ls.count, ls.active = n, time.Now()
		return true
	}
	if time.Since(ls.active) >= c.IdleTimeout {
		s.stop(context.Background(), *rb, false)
		ls.dormant = true
		s.log.Info("bridge idle; stopped until messages wait for it (start lazy)", "bridge", c.Name, "idle_timeout", c.IdleTimeout)
	}
	return true
}

// watch reloads the bridges from path on SIGHUP until close.
func (s *Set) watch(ctx context.Context, path string, hup <-chan struct{}) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				s.reload(ctx, path)
			}
		}
	}()
	s.stopWatch = func() { cancel(); <-done }
}

// reload applies the bridges of the file at path, beside the API's. A
// file that does not load changes nothing.
func (s *Set) reload(ctx context.Context, path string) {
	cfg, err := config.Load(path)
	s.mu.Lock()
	defer s.mu.Unlock()
	var all []config.Bridge
	if err == nil {
		all, err = s.combine(cfg.Bridges, s.api)
	}
	if err != nil {
		s.log.Error("SIGHUP: bridges not reloaded; keeping the running ones", "err", err)
		return
	}
	s.file = cfg.Bridges
	for name, err := range s.apply(ctx, all) {
		s.log.Error("SIGHUP: bridge not started", "bridge", name, "err", err)
	}
	s.log.Info("SIGHUP: bridges reloaded", "bridges", len(s.list))
}

// apply makes want the running bridges: a bridge whose entry is unchanged
// keeps running; a changed one restarts (its local session, and what is
// queued there, carries over when its local client id stays, and stays
// for the next try when the new entry does not start); a removed one
// stops and its local session ends, so nothing more queues for it. It
// returns the errors of the bridges that did not start, by name. s.mu is
// held.
func (s *Set) apply(ctx context.Context, want []config.Bridge) map[string]error {
	old := map[string]runningBridge{}
	for _, rb := range s.list {
		old[rb.cfg.Name] = rb
	}
	errs := map[string]error{}
	var next []runningBridge
	for _, c := range want {
		rb, ok := old[c.Name]
		delete(old, c.Name)
		if ok && reflect.DeepEqual(rb.cfg, c) {
			rb.pending = nil // changed back before it applied
			next = append(next, rb)
			continue
		}
		if ok && c.ReloadLazy && rb.b.Connected() {
			if rb.pending == nil {
				s.restartWhenLost(rb.b)
			}
			rb.pending = &c
			s.log.Info("bridge changed; the change applies when its connection drops (reload lazy)", "bridge", c.Name)
			next = append(next, rb)
			continue
		}
		if ok {
			s.stop(ctx, rb, false) // first: the new one may take over its session
		}
		nb, err := s.start(ctx, c)
		if ok && err == nil && nb.b.LocalClientID() != rb.b.LocalClientID() {
			s.srv.DisconnectClient(rb.b.LocalClientID(), true) // nothing reads that session any more
		}
		if err != nil {
			errs[c.Name] = err
			continue
		}
		next = append(next, nb)
	}
	for _, rb := range old {
		s.stop(ctx, rb, true)
	}
	s.list = next
	return errs
}

// state returns the QoS 2 state of the bridge named name: the same for
// every start of it, so that a restarted bridge completes what the last
// one had in flight.
func (s *Set) state(name string) (*bridge.State, error) {
	if st := s.states[name]; st != nil {
		return st, nil
	}
	st := bridge.MemoryState()
	if s.stateDir != "" {
		var err error
		// Not fsynced: an fsync per step of each QoS 2 flow costs 17
		// times the throughput (bench/bridge/RESULTS.md), and what a
		// power loss can take from it makes a duplicate, never a loss
		// (a stale record only matches a redelivery, DUP 1).
		if st, err = bridge.FileState(filepath.Join(s.stateDir, name), false); err != nil {
			return nil, err
		}
	}
	s.states[name] = st
	return st, nil
}

// restartWhenLost restarts b with its pending entry once its remote
// connection drops, unless b stopped first.
func (s *Set) restartWhenLost(b *bridge.Bridge) {
	go func() {
		select {
		case <-b.Lost():
		case <-b.Closed():
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		i := slices.IndexFunc(s.list, func(rb runningBridge) bool { return rb.b == b })
		if s.closed || i < 0 || s.list[i].pending == nil {
			return // closing, or replaced or stopped meanwhile
		}
		c := *s.list[i].pending
		s.stop(context.Background(), s.list[i], false)
		nb, err := s.start(context.Background(), c)
		if err != nil {
			s.log.Error("bridge not restarted with its changed settings", "bridge", c.Name, "err", err)
			s.list = slices.Delete(s.list, i, i+1)
			return
		}
		if nb.b.LocalClientID() != b.LocalClientID() {
			s.srv.DisconnectClient(b.LocalClientID(), true)
		}
		s.list[i] = nb
	}()
}

// stop closes a bridge; with endSession its local session ends too, and
// its QoS 2 state with it (the packet identifiers it is keyed by belong
// to that session).
func (s *Set) stop(ctx context.Context, rb runningBridge, endSession bool) {
	if err := rb.b.Close(ctx); err != nil {
		s.log.Warn("closing bridge", "bridge", rb.b.Name(), "err", err)
	}
	if endSession {
		s.srv.DisconnectClient(rb.b.LocalClientID(), true)
		if st := s.states[rb.b.Name()]; st != nil {
			st.Close()
			delete(s.states, rb.b.Name())
		}
		if s.stateDir != "" {
			if err := os.RemoveAll(filepath.Join(s.stateDir, rb.b.Name())); err != nil {
				s.log.Warn("removing the state of a removed bridge", "bridge", rb.b.Name(), "err", err)
			}
		}
	}
	s.log.Info("bridge stopped", "bridge", rb.b.Name(), "session_ended", endSession)
}

// Close stops the reloading and every bridge, waiting at most until ctx
// ends; what they did not forward stays queued in their sessions.
func (s *Set) Close(ctx context.Context) {
	s.stopWatch()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		close(s.done)
	}
	s.closed = true
	for _, rb := range s.list {
		if err := rb.b.Close(ctx); err != nil {
			s.log.Warn("closing bridge", "bridge", rb.b.Name(), "err", err)
		}
	}
	for _, st := range s.states { // after the bridges, which write to them until closed
		st.Close()
	}
}

// Stats returns every bridge's figures, for the HTTP server.
func (s *Set) Stats() []bridge.Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]bridge.Stats, 0, len(s.list))
	for _, rb := range s.list {
		out = append(out, rb.b.Stats())
	}
	return out
}
