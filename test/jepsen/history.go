package jepsen

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Status is what became of an operation.
type Status uint8

// An operation is invoked, then acknowledged (OK), refused (Fail: a reason
// code of 0x80 or more, so it did not happen) or Unknown (its connection
// died before the answer: it may or may not have happened).
const (
	Invoked Status = iota
	OK
	Fail
	Unknown
)

func (s Status) String() string {
	return [...]string{"invoked", "ok", "fail", "unknown"}[s]
}

// MarshalText writes the status by name in the history file.
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a status written by MarshalText.
func (s *Status) UnmarshalText(b []byte) error {
	for c := Invoked; c <= Unknown; c++ {
		if c.String() == string(b) {
			*s = c
			return nil
		}
	}
	return fmt.Errorf("jepsen: unknown status %q", b)
}

// PubOp is one PUBLISH at QoS 1 or 2. Its payload is "j" and its index in
// History.Pubs, which makes every payload unique and lets a delivery name
// the operation it carries.
type PubOp struct {
	Client string `json:"client"`
	// Conn numbers the publisher's connections: publishers start clean,
	// so each connection is a session of its own, and order is promised
	// per session [MQTT-4.6.0-5].
	Conn   int    `json:"conn"`
	Node   int    `json:"node"`
	Topic  string `json:"topic"`
	QoS    uint8  `json:"qos"`
	Retain bool   `json:"retain,omitempty"`
	// Seq orders the publisher's operations; it is the operation's index
	// among the publisher's own.
	Seq    int    `json:"seq"`
	Invoke int64  `json:"invoke"` // ns since the run began
	Return int64  `json:"return,omitempty"`
	Status Status `json:"status"`
	Reason uint8  `json:"reason,omitempty"`
	// Resent is set when a persistent publisher sent the PUBLISH again
	// (DUP) on a resumed session.
	Resent bool `json:"resent,omitempty"`
}

// Delivery is one PUBLISH a subscriber received and handed on. A QoS 2
// PUBLISH that repeats a packet id still awaiting PUBREL is not a delivery
// [MQTT-4.3.3-10], so it is not recorded.
type Delivery struct {
	Sub int `json:"sub"` // index in History.Subs
	// Epoch numbers the subscriber's sessions: a clean subscriber's
	// connections, a persistent one's incarnations (a new one only when
	// the broker said the session was not present).
	Epoch int   `json:"epoch"`
	Conn  int   `json:"conn"`
	Node  int   `json:"node"`
	Op    int   `json:"op"` // index in History.Pubs, -1 when the payload names none
	QoS   uint8 `json:"qos"`
	Dup   bool  `json:"dup,omitempty"`
	// TopicOK is false when the delivery's topic is not the one its
	// operation was published to.
	TopicOK bool  `json:"topic_ok"`
	At      int64 `json:"at"`
}

// Kind is a subscriber's kind.
type Kind uint8

// Persistent subscribers keep one session for the whole run (Clean Start 0,
// Session Expiry longer than the run); Clean ones start a new session on
// every connection; Shared ones are persistent members of a shared group.
const (
	Persistent Kind = iota
	Clean
	Shared
)

func (k Kind) String() string { return [...]string{"persistent", "clean", "shared"}[k] }

// MarshalText writes the kind by name in the history file.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText reads a kind written by MarshalText.
func (k *Kind) UnmarshalText(b []byte) error {
	for c := Persistent; c <= Shared; c++ {
		if c.String() == string(b) {
			*k = c
			return nil
		}
	}
	return fmt.Errorf("jepsen: unknown subscriber kind %q", b)
}

// Subscriber describes one subscribing client.
type Subscriber struct {
	ID     string `json:"id"`
	Kind   Kind   `json:"kind"`
	Group  string `json:"group,omitempty"`
	Filter string `json:"filter"`
	QoS    uint8  `json:"qos"`
	// SubAck is when the first SUBACK of the run arrived (ns): acknowledged
	// publishes invoked after it must reach a persistent subscriber.
	SubAck int64 `json:"suback"`
	// Lost counts CONNACKs without session present for a session that
	// should have been there.
	Lost int `json:"sessions_lost"`
}

// Read is one read of a retained topic: a SUBSCRIBE and the retained
// message that answered it.
type Read struct {
	Client string `json:"client"`
	Node   int    `json:"node"`
	Topic  string `json:"topic"`
	Invoke int64  `json:"invoke"`
	Return int64  `json:"return"`
	Op     int    `json:"op"` // the operation whose payload came back; -1 for none
}

// Event is anything else worth reading in a failed run's history: the
// nemesis' actions, connections refused, sessions lost.
type Event struct {
	At   int64  `json:"at"`
	Who  string `json:"who"`
	What string `json:"what"`
}

// History is everything a run did and saw. Its methods are safe for
// concurrent use; the checker reads it once the run is over.
type History struct {
	mu sync.Mutex
	// Start is the wall-clock time the run began, which every record's
	// time counts from: the node logs' times are Start plus those.
	Start      time.Time    `json:"start"`
	Seed       uint64       `json:"seed"`
	Nodes      int          `json:"nodes"`
	Pubs       []PubOp      `json:"pubs"`
	Deliveries []Delivery   `json:"deliveries"`
	Subs       []Subscriber `json:"subscribers"`
	Reads      []Read       `json:"reads"`
	Events     []Event      `json:"events"`
	// Connects counts subscriber connections; Resumed those of them that
	// continued a persistent session (session present).
	Connects int `json:"connects"`
	Resumed  int `json:"resumed"`
	// PubSessionsLost counts CONNACKs without session present for a
	// persistent publisher's session.
	PubSessionsLost int `json:"publisher_sessions_lost"`
	// Resent counts PUBLISHes (DUP) and PUBRELs persistent publishers sent
	// again on a resumed session.
	Resent int `json:"resent"`
}

func newHistory(seed uint64, nodes int) *History {
	return &History{Start: time.Now(), Seed: seed, Nodes: nodes}
}

// now is the time since the run began, the clock of every record.
func (h *History) now() int64 { return int64(time.Since(h.Start)) }

// invoke records op as invoked now and returns its index (and payload).
func (h *History) invoke(op PubOp) (int, []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	op.Invoke, op.Status = h.now(), Invoked
	h.Pubs = append(h.Pubs, op)
	i := len(h.Pubs) - 1
	return i, payloadOf(i)
}

// complete records the outcome of operation i. Only an invoked operation
// changes: an acknowledgement cannot be taken back by a later close.
func (h *History) complete(i int, s Status, reason uint8) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.Pubs[i].Status != Invoked {
		return
	}
	h.Pubs[i].Status, h.Pubs[i].Reason = s, reason
	if s != Unknown {
		h.Pubs[i].Return = h.now()
	}
}

// deliver records d, received on topic, now.
func (h *History) deliver(d Delivery, topic string) {
	h.mu.Lock()
	d.At = h.now()
	if d.Op >= len(h.Pubs) {
		d.Op = -1
	}
	d.TopicOK = d.Op >= 0 && h.Pubs[d.Op].Topic == topic
	h.Deliveries = append(h.Deliveries, d)
	h.mu.Unlock()
}

func (h *History) addSub(s Subscriber) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.Subs = append(h.Subs, s)
	return len(h.Subs) - 1
}

func (h *History) subAcked(i int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.Subs[i].SubAck == 0 {
		h.Subs[i].SubAck = h.now()
	}
}

func (h *History) connected(resumed bool) {
	h.mu.Lock()
	h.Connects++
	if resumed {
		h.Resumed++
	}
	h.mu.Unlock()
}

func (h *History) resent(n int, ops []int) {
	h.mu.Lock()
	h.Resent += n
	for _, op := range ops {
		h.Pubs[op].Resent = true
	}
	h.mu.Unlock()
}

func (h *History) pubSessionLost(id string, node, inflight int) {
	h.mu.Lock()
	h.PubSessionsLost++
	h.mu.Unlock()
	h.event(id, "session not present on node %d: %d unacknowledged publishes become unknown", node, inflight)
}

func (h *History) sessionLost(i int) {
	h.mu.Lock()
	h.Subs[i].Lost++
	h.mu.Unlock()
	h.event(h.Subs[i].ID, "session not present on reconnection")
}

func (h *History) read(r Read) {
	h.mu.Lock()
	r.Return = h.now()
	h.Reads = append(h.Reads, r)
	h.mu.Unlock()
}

func (h *History) event(who, format string, args ...any) {
	h.mu.Lock()
	h.Events = append(h.Events, Event{At: h.now(), Who: who, What: fmt.Sprintf(format, args...)})
	h.mu.Unlock()
}

// payloadOf is the unique payload of operation i.
func payloadOf(i int) []byte { return strconv.AppendInt([]byte{'j'}, int64(i), 10) }

// opOf is the operation a payload names, or -1.
func opOf(payload []byte) int {
	s, ok := strings.CutPrefix(string(payload), "j")
	if !ok {
		return -1
	}
	i, err := strconv.Atoi(s)
	if err != nil || i < 0 {
		return -1
	}
	return i
}

// ReadHistory reads a history WriteFile wrote, to check it again.
func ReadHistory(path string) (*History, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	h := &History{}
	if err := json.Unmarshal(b, h); err != nil {
		return nil, fmt.Errorf("jepsen: %s: %w", path, err)
	}
	return h, nil
}

// WriteFile writes the history as JSON to path, atomically (a temporary
// file renamed into place), so a reader never sees half of it.
func (h *History) WriteFile(path string) error {
	h.mu.Lock()
	b, err := json.Marshal(h)
	h.mu.Unlock()
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".history-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}
