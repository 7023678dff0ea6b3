package interop

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// jsHub is the one node process (js/hub.js) that runs every mqtt.js
// client of the test binary. A node process with mqtt.js loaded costs
// 0.15-0.3 s of CPU to start and a client a few milliseconds; with a
// process per client, node was 86 % of the package's CPU (docs/testing.md).
// A test talks to its clients only, by their cid, as it did to a process
// of its own.
type jsHub struct {
	cmd    *exec.Cmd
	stderr *logSink
	exited chan struct{} // closed once node has exited and its output is read

	// wmu serializes writes to stdin. It is not mu: a write can block
	// until node reads, and node can block until read takes an event
	// line, which needs mu.
	wmu   sync.Mutex
	stdin io.WriteCloser

	mu      sync.Mutex // guards clients, nextCID and err
	clients map[int]*jsClient
	nextCID int
	err     error // why the hub is gone, once it is
}

var (
	hubMu sync.Mutex
	hub   *jsHub // started by the first startHub, stopped by TestMain
)

// startHub returns the running hub, starting it on first use. It fails
// the test if node or the npm packages are missing.
func startHub(t *testing.T) *jsHub {
	t.Helper()
	hubMu.Lock()
	defer hubMu.Unlock()
	if hub != nil {
		return hub
	}
	node := requireTool(t, "node")
	script, err := filepath.Abs(filepath.Join("js", "hub.js"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(script), "..", "node_modules", "mqtt", "package.json")); err != nil {
		t.Fatalf("mqtt.js is not installed in test/interop/node_modules: run ./scripts/test.sh (it runs npm ci --prefix test/interop)")
	}
	h := &jsHub{
		// Not tied to a test: the hub serves the whole binary and leaves
		// when its stdin closes (stopHub, or this process's end).
		cmd:     exec.Command(node, script),
		stderr:  &logSink{name: "mqtt.js hub", stream: os.Getenv("ROOST_INTEROP_LOG") == "1"},
		exited:  make(chan struct{}),
		clients: map[int]*jsClient{},
	}
	h.cmd.Stderr = h.stderr
	stdout, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if h.stdin, err = h.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatalf("start node %s: %v", script, err)
	}
	go h.read(stdout)
	hub = h
	return h
}

// stopHub ends the hub, if one was started: closing its stdin closes
// every client left, then node exits.
func stopHub() {
	hubMu.Lock()
	h := hub
	hub = nil
	hubMu.Unlock()
	if h == nil {
		return
	}
	h.wmu.Lock()
	h.stdin.Close()
	h.wmu.Unlock()
	select {
	case <-h.exited:
	case <-time.After(5 * time.Second):
		h.cmd.Process.Kill()
		<-h.exited
	}
}

// read hands each event line to its client until node exits; then every
// client still open gets an error event and is gone.
func (h *jsHub) read(stdout io.Reader) {
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var ev struct {
			CID int `json:"cid"`
			jsEvent
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			fmt.Fprintf(h.stderr, "bad line %q: %v\n", line, err)
			continue
		}
		h.mu.Lock()
		c := h.clients[ev.CID]
		if ev.Event == "ended" || ev.Event == "gone" {
			delete(h.clients, ev.CID)
		}
		h.mu.Unlock()
		if c == nil {
			fmt.Fprintf(h.stderr, "line for no client: %s\n", line)
			continue
		}
		c.deliver(ev.jsEvent, line)
	}
	io.Copy(io.Discard, stdout)
	err := h.cmd.Wait()
	h.mu.Lock()
	h.err = fmt.Errorf("the mqtt.js hub (node js/hub.js) exited: %v; its stderr:\n%s", err, h.stderr.tail(30))
	left := h.clients
	h.clients = nil
	h.mu.Unlock()
	for _, c := range left {
		c.deliver(jsEvent{Event: "error", Where: "hub", Message: h.err.Error()}, "(hub exited)")
		c.goneOnce.Do(func() { close(c.gone) })
	}
	close(h.exited)
}

// open registers c under a new cid and asks the hub to connect it with o.
func (h *jsHub) open(c *jsClient, o jsOpts) error {
	h.mu.Lock()
	if h.err != nil {
		h.mu.Unlock()
		return h.err
	}
	h.nextCID++
	c.cid = h.nextCID
	h.clients[c.cid] = c
	h.mu.Unlock()
	return h.send(c.cid, map[string]any{"cmd": "open", "opts": o})
}

// send writes one command for client cid.
func (h *jsHub) send(cid int, cmd map[string]any) error {
	cmd["cid"] = cid
	line, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	h.mu.Lock()
	gone := h.err
	h.mu.Unlock()
	if gone != nil {
		return gone
	}
	h.wmu.Lock()
	defer h.wmu.Unlock()
	if _, err := h.stdin.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("writing to the mqtt.js hub: %w", err)
	}
	return nil
}
