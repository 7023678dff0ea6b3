package jepsen

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Explain sets out, for a failed run's trace, what the history says about
// operation op and the subscribers named who (a subscriber's id, or a
// shared group's name for all its members): the operation with wall-clock
// times (to grep the node logs with), each subscriber's connections (node,
// when it got what, and whether it got op), and the events from window
// before the publish to window after its answer. Node indexes are written
// as the node names the logs use (index 0 is n1).
func Explain(h *History, who string, op int, window time.Duration) (string, error) {
	if op < 0 || op >= len(h.Pubs) {
		return "", fmt.Errorf("jepsen: no operation %d (the run has %d)", op, len(h.Pubs))
	}
	var subs []int
	for i := range h.Subs {
		if s := &h.Subs[i]; s.ID == who || s.Kind == Shared && s.Group == who {
			subs = append(subs, i)
		}
	}
	if len(subs) == 0 {
		return "", fmt.Errorf("jepsen: no subscriber or group %q", who)
	}
	var b strings.Builder
	p := &h.Pubs[op]
	fmt.Fprintf(&b, "%s#%d (op %d): QoS %d on %s, published on n%d (connection %d), %s, invoked %s, answered %s",
		p.Client, p.Seq, op, p.QoS, p.Topic, p.Node+1, p.Conn, p.Status, h.at(p.Invoke), h.at(p.Return))
	if p.Resent {
		b.WriteString(", sent again by its publisher (DUP)")
	}
	b.WriteString("\n")
	if h.Start.IsZero() {
		b.WriteString("(this history has no start time: times are since the run began only)\n")
	}
	type connKey struct{ sub, epoch, conn, node int }
	type conn struct {
		n, got         int
		first, last    int64 // deliveries
		pubFrom, pubTo int64 // the invoke times of what it got
		gotAt          []int64
	}
	conns := map[connKey]*conn{}
	for _, d := range h.Deliveries {
		if !slices.Contains(subs, d.Sub) {
			continue
		}
		k := connKey{d.Sub, d.Epoch, d.Conn, d.Node}
		c := conns[k]
		if c == nil {
			c = &conn{first: d.At, pubFrom: -1}
			conns[k] = c
		}
		c.n++
		c.last = d.At
		if d.Op >= 0 {
			inv := h.Pubs[d.Op].Invoke
			if c.pubFrom < 0 || inv < c.pubFrom {
				c.pubFrom = inv
			}
			c.pubTo = max(c.pubTo, inv)
		}
		if d.Op == op {
			c.got++
			c.gotAt = append(c.gotAt, d.At)
		}
	}
	keys := make([]connKey, 0, len(conns))
	for k := range conns {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y connKey) int {
		return cmp.Or(cmp.Compare(x.sub, y.sub), cmp.Compare(conns[x].first, conns[y].first))
	})
	for _, k := range keys {
		c := conns[k]
		fmt.Fprintf(&b, "  %s session %d connection %d on n%d: %d deliveries %s .. %s, of messages published %s .. %s",
			h.Subs[k.sub].ID, k.epoch, k.conn, k.node+1, c.n, h.at(c.first), h.at(c.last), h.at(c.pubFrom), h.at(c.pubTo))
		for _, at := range c.gotAt {
			fmt.Fprintf(&b, "; got op %d at %s", op, h.at(at))
		}
		b.WriteString("\n")
	}
	from, to := p.Invoke-int64(window), max(p.Return, p.Invoke)+int64(window)
	names := map[string]bool{"nemesis": true, p.Client: true}
	for _, i := range subs {
		names[h.Subs[i].ID] = true
	}
	for _, e := range h.Events {
		if e.At >= from && e.At <= to && names[e.Who] {
			fmt.Fprintf(&b, "  %s %s: %s\n", h.at(e.At), e.Who, nodeIndex.ReplaceAllStringFunc(e.What, nodeName))
		}
	}
	return b.String(), nil
}

// nodeIndex is a node as events name it, by index.
var nodeIndex = regexp.MustCompile(`node [0-9]+`)

// nodeName adds to "node I" the name the node logs use (nI+1).
func nodeName(s string) string {
	i, _ := strconv.Atoi(strings.TrimPrefix(s, "node "))
	return fmt.Sprintf("%s (n%d)", s, i+1)
}

// at writes a history time (ns since the run began) as seconds into the
// run and, when the history has its start, as the wall-clock time the
// node logs use.
func (h *History) at(ns int64) string {
	if ns <= 0 {
		return "-"
	}
	s := fmt.Sprintf("%.3fs", float64(ns)/1e9)
	if !h.Start.IsZero() {
		s += " (" + h.Start.Add(time.Duration(ns)).UTC().Format("15:04:05.000") + ")"
	}
	return s
}
