package jepsen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/roost-mqtt/roost/internal/clustertest"
	"github.com/roost-mqtt/roost/internal/netfault"
)

// Procs runs roost serve processes, one per node, and implements Nodes.
// One node listens on 127.0.0.1; a cluster's node i on 127.0.0.(i+2),
// the address its outgoing cluster connections are bound to, so that a
// partition can later cut node pairs. Ports are chosen free once and kept
// across restarts: clients and peers find a restarted node where it was.
type Procs struct {
	dir, config string
	extra       []string
	nodes       []*proc
}

type proc struct {
	name, ip, mqtt, cluster, data, log string
	peers                              []string

	// run is the process; each start appends to the same log.
	run *clustertest.Proc
}

// startTimeout bounds a node's start; on two loaded cores a cluster node
// with -race takes several seconds.
const startTimeout = 60 * time.Second

// StartProcs starts n nodes of bin (n = 1: a single node) with their data
// and logs under dir, the broker configuration config (a YAML file, may
// be "") and extra arguments, and waits until all serve (a cluster: until
// every node has joined the others and its replicated records are ready).
//
// A port that clustertest.FreeAddr found free may be taken by another
// process before the node binds it (the suite runs packages side by side):
// a start that fails so is tried again, twice at most, on new ports and
// emptied directories.
func StartProcs(ctx context.Context, bin, dir, config string, n int, extra ...string) (*Procs, error) {
	for attempt := 1; ; attempt++ {
		ps, err := startProcs(ctx, bin, dir, config, n, extra...)
		if err == nil || attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			return ps, err
		}
		for i := range n {
			data := filepath.Join(dir, fmt.Sprintf("n%d", i+1))
			if rerr := errors.Join(os.RemoveAll(data), os.RemoveAll(data+".log")); rerr != nil {
				return nil, errors.Join(err, rerr)
			}
		}
	}
}

func startProcs(ctx context.Context, bin, dir, config string, n int, extra ...string) (*Procs, error) {
	ps := &Procs{dir: dir, config: config, extra: extra}
	for i := range n {
		ip := "127.0.0.1"
		if n > 1 {
			ip = fmt.Sprintf("127.0.0.%d", i+2)
		}
		mqtt, err := clustertest.FreeAddr(ip)
		if err != nil {
			return nil, err
		}
		p := &proc{name: fmt.Sprintf("n%d", i+1), ip: ip, mqtt: mqtt,
			data: filepath.Join(dir, fmt.Sprintf("n%d", i+1))}
		p.log = p.data + ".log"
		p.run = &clustertest.Proc{Name: p.name, Bin: bin, LogPath: p.log}
		if n > 1 {
			if p.cluster, err = clustertest.FreeAddr(ip); err != nil {
				return nil, err
			}
		}
		ps.nodes = append(ps.nodes, p)
	}
	for _, p := range ps.nodes {
		for _, o := range ps.nodes {
			if o != p && o.cluster != "" {
				p.peers = append(p.peers, o.cluster)
			}
		}
	}
	for i := range ps.nodes {
		if err := ps.launch(i); err != nil {
			ps.Stop()
			return nil, err
		}
	}
	for i := range ps.nodes {
		if err := ps.waitReady(ctx, i); err != nil {
			ps.Stop()
			return nil, err
		}
	}
	return ps, nil
}

// Addrs implements Nodes.
func (ps *Procs) Addrs() []string {
	a := make([]string, len(ps.nodes))
	for i, p := range ps.nodes {
		a[i] = p.mqtt
	}
	return a
}

// Logs are the nodes' log files (every run of a node appends to its own).
func (ps *Procs) Logs() []string {
	l := make([]string, len(ps.nodes))
	for i, p := range ps.nodes {
		l[i] = p.log
	}
	return l
}

func (ps *Procs) launch(i int) error {
	p := ps.nodes[i]
	args := []string{"serve", "--listen", "mqtt://" + p.mqtt, "--data", p.data}
	if ps.config != "" {
		args = append(args, "--config", ps.config)
	}
	if p.cluster != "" {
		args = append(args, "--node", p.name, "--cluster-listen", p.cluster)
		for _, peer := range p.peers {
			args = append(args, "--cluster-peer", peer)
		}
	}
	args = append(args, ps.extra...)
	// The marker tells this start's lines from the earlier starts' in the
	// one log (waitReady).
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	_, err = fmt.Fprint(logf, startMarker(p.name, p.run.Starts()+1))
	if cerr := logf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return p.run.Start(args...)
}

// startMarker is the line launch writes to a node's log before its nth
// start.
func startMarker(name string, n int) string {
	return fmt.Sprintf("=== jepsen: start %d of %s\n", n, name)
}

// ready lines: what a node logs once it serves (a cluster node: once it
// can also record owners and follows the retained stream).
func (ps *Procs) readyLines() []string {
	if len(ps.nodes) == 1 {
		return []string{"listener ready"}
	}
	return clustertest.ReadyLines
}

// waitReady waits until node i's current run has logged every ready line.
func (ps *Procs) waitReady(ctx context.Context, i int) error {
	p := ps.nodes[i]
	done, marker := p.run.Done(), startMarker(p.name, p.run.Starts())
	deadline := time.Now().Add(startTimeout)
	for {
		b, err := os.ReadFile(p.log)
		if err != nil {
			return err
		}
		if k := bytes.LastIndex(b, []byte(marker)); k >= 0 {
			b = b[k:]
		}
		missing := ""
		for _, l := range ps.readyLines() {
			if !bytes.Contains(b, []byte(l)) {
				missing = l
				break
			}
		}
		if missing == "" {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("jepsen: %s exited while starting:\n%s", p.name, tail(b))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("jepsen: %s did not log %q within %v:\n%s", p.name, missing, startTimeout, tail(b))
		}
	}
}

func tail(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-20):], "\n")
}

// Kill implements Nodes: SIGKILL, and wait for the exit.
func (ps *Procs) Kill(i int) error { return ps.nodes[i].run.Kill(10 * time.Second) }

// Start implements Nodes.
func (ps *Procs) Start(ctx context.Context, i int) error {
	if err := ps.launch(i); err != nil {
		return err
	}
	return ps.waitReady(ctx, i)
}

// Pause implements Nodes: SIGSTOP, and wait until the kernel says the
// process is stopped (kill(2) returns before).
func (ps *Procs) Pause(i int) error { return ps.nodes[i].run.Pause() }

// Resume implements Nodes.
func (ps *Procs) Resume(i int) error { return ps.nodes[i].run.Resume() }

// Stop ends every node: SIGCONT and SIGTERM, SIGKILL after 15 s. It
// reports the nodes that had to be killed.
func (ps *Procs) Stop() error {
	var errs []error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range ps.nodes {
		wg.Go(func() {
			if p.run.Stop(15 * time.Second) {
				mu.Lock()
				errs = append(errs, fmt.Errorf("jepsen: %s did not stop on SIGTERM within 15 s", p.name))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Partitioned is Procs inside a private network namespace
// (internal/netfault): it is also a Partitioner. Isolate cuts a node's
// address off from the other nodes'; clients connect from 127.0.0.1,
// which no cut touches, so a node's clients stay connected to it (a
// minority partition with clients on its side).
type Partitioned struct {
	*Procs
	Net *netfault.Net
}

// Isolate implements Partitioner.
func (p Partitioned) Isolate(i int) error { return p.Net.Isolate(p.nodes[i].ip) }

// Heal implements Partitioner.
func (p Partitioned) Heal() error { return p.Net.Heal() }
