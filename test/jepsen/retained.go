package jepsen

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/anishathalye/porcupine"
)

// regInput is one operation on a retained topic, a last-writer-wins
// register: a write of operation op's payload, or a read that returned op.
type regInput struct {
	topic string
	write bool
	op    int
}

// registerModel is a register per retained topic holding the index of
// the publish whose payload it keeps (-1: none yet).
var registerModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byTopic := map[string][]porcupine.Operation{}
		var order []string
		for _, o := range history {
			t := o.Input.(regInput).topic
			if _, ok := byTopic[t]; !ok {
				order = append(order, t)
			}
			byTopic[t] = append(byTopic[t], o)
		}
		out := make([][]porcupine.Operation, 0, len(order))
		for _, t := range order {
			out = append(out, byTopic[t])
		}
		return out
	},
	Init: func() any { return -1 },
	Step: func(state, input, output any) (bool, any) {
		in := input.(regInput)
		if in.write {
			return true, in.op
		}
		return in.op == state.(int), state
	},
	DescribeOperation: func(input, output any) string {
		in := input.(regInput)
		if in.write {
			return fmt.Sprintf("write %s j%d", in.topic, in.op)
		}
		return fmt.Sprintf("read %s -> j%d", in.topic, in.op)
	},
	DescribeState: func(state any) string { return fmt.Sprintf("j%d", state.(int)) },
}

// linearizeTimeout bounds porcupine's search; beyond it the verdict is
// "unknown" rather than a hang.
const linearizeTimeout = 30 * time.Second

// retainedOps is the retained history as porcupine operations: writes
// acknowledged (from invocation to PUBACK) or unknown (from invocation
// to after the end: they may take effect at any time or never, and a
// write linearized after every read changes nothing); refused writes did
// not happen and are left out. Reads of a payload that names no publish
// are kept: they make the history illegal, as they should.
func retainedOps(h *History) []porcupine.Operation {
	var end int64
	for _, op := range h.Pubs {
		end = max(end, op.Invoke, op.Return)
	}
	for _, rd := range h.Reads {
		end = max(end, rd.Return)
	}
	end++
	// Client ids only lay out porcupine's picture: one row per client.
	ids := map[string]int{}
	id := func(c string) int {
		if _, ok := ids[c]; !ok {
			ids[c] = len(ids)
		}
		return ids[c]
	}
	// An unknown write that no read returned is left out too: placed
	// after every other operation (which its open end allows) it changes
	// nothing, and each one kept would multiply porcupine's search after
	// a kill.
	read := map[int]bool{}
	for _, rd := range h.Reads {
		read[rd.Op] = true
	}
	var ops []porcupine.Operation
	for i, op := range h.Pubs {
		if !op.Retain || op.Status == Fail || op.Status != OK && !read[i] {
			continue
		}
		ret := op.Return
		if op.Status != OK {
			ret = end
		}
		ops = append(ops, porcupine.Operation{ClientId: id(op.Client), Input: regInput{op.Topic, true, i}, Call: op.Invoke, Return: ret})
	}
	for _, rd := range h.Reads {
		ops = append(ops, porcupine.Operation{ClientId: id(rd.Client), Input: regInput{rd.Topic, false, rd.Op}, Call: rd.Invoke, Return: rd.Return})
	}
	return ops
}

func checkRetained(h *History, r *Result) {
	ops := retainedOps(h)
	if len(ops) == 0 {
		r.Linearizable = "ok"
		return
	}
	res, _ := porcupine.CheckOperationsVerbose(registerModel, ops, linearizeTimeout)
	switch res {
	case porcupine.Ok:
		r.Linearizable = "ok"
	case porcupine.Unknown:
		r.Linearizable = "unknown"
	default:
		r.Linearizable = "illegal"
		// Check each topic alone to name the illegal ones.
		byTopic := map[string][]porcupine.Operation{}
		for _, o := range ops {
			t := o.Input.(regInput).topic
			byTopic[t] = append(byTopic[t], o)
		}
		for t, tops := range byTopic {
			if porcupine.CheckOperationsTimeout(registerModel, tops, linearizeTimeout) == porcupine.Illegal {
				r.NotLinear = append(r.NotLinear, t)
				r.example("retained", "%s: no linearization of its %d operations", t, len(tops))
			}
		}
		slices.Sort(r.NotLinear)
		staleReads(h, r)
	}
}

// staleReads explains an illegal retained history by its plainest causes,
// counted together as stale reads. Read R returned the value of write V:
//
//   - R is stale when some acknowledged write X to the topic began after
//     V was acknowledged and was acknowledged before R began: V, X, R
//     follow each other in real time, so R must not see V (an empty read
//     is stale after any acknowledged write);
//   - R went back when an earlier read (over before R began) returned a
//     write that began after V was acknowledged: a value was read, then
//     taken back.
//
// Staleness is from X's acknowledgement (or the earlier read's end) to
// R's start.
func staleReads(h *History, r *Result) {
	byTopic := map[string][]Read{}
	for _, rd := range h.Reads {
		byTopic[rd.Topic] = append(byTopic[rd.Topic], rd)
	}
	for _, reads := range byTopic {
		byEnd := slices.Clone(reads)
		slices.SortFunc(byEnd, func(a, b Read) int { return cmp.Compare(a.Return, b.Return) })
		slices.SortFunc(reads, func(a, b Read) int { return cmp.Compare(a.Invoke, b.Invoke) })
		// newest: of the reads over so far, the one whose value's write
		// began last.
		var newest *Read
		next := 0
		for _, rd := range reads {
			for ; next < len(byEnd) && byEnd[next].Return < rd.Invoke; next++ {
				if e := &byEnd[next]; e.Op >= 0 && (newest == nil || h.Pubs[e.Op].Invoke > h.Pubs[newest.Op].Invoke) {
					newest = e
				}
			}
			staleRead(h, r, rd, newest)
		}
	}
}

func staleRead(h *History, r *Result, rd Read, newest *Read) {
	var v *PubOp
	if rd.Op >= 0 {
		v = &h.Pubs[rd.Op]
	}
	older := func(w *PubOp) bool { return v == nil || v.Status == OK && v.Return < w.Invoke }
	var worst int64 = -1
	var why string
	for i := range h.Pubs {
		w := &h.Pubs[i]
		if !w.Retain || w.Topic != rd.Topic || w.Status != OK || w.Return >= rd.Invoke {
			continue
		}
		if older(w) && rd.Invoke-w.Return > worst {
			worst = rd.Invoke - w.Return
			why = fmt.Sprintf("overwritten by %s#%d (node %d) acknowledged %v before", w.Client, w.Seq, w.Node, time.Duration(worst).Round(time.Millisecond))
		}
	}
	if newest != nil && worst < 0 {
		if w := &h.Pubs[newest.Op]; older(w) {
			worst = rd.Invoke - newest.Return
			why = fmt.Sprintf("after %s read %s#%d (%s) on node %d %v before", newest.Client, w.Client, w.Seq, w.Status, newest.Node,
				time.Duration(worst).Round(time.Millisecond))
		}
	}
	if worst < 0 {
		return
	}
	r.StaleReads++
	r.MaxStale = max(r.MaxStale, time.Duration(worst))
	r.StaleByNode[rd.Node]++
	what := "nothing"
	if v != nil {
		what = fmt.Sprintf("%s#%d (node %d)", v.Client, v.Seq, v.Node)
	}
	r.example("stale-read", "%s on node %d at %.3fs read %s on %s, %s", rd.Client, rd.Node, float64(rd.Invoke)/1e9, what, rd.Topic, why)
}

// WriteLinearizability writes porcupine's HTML view of the retained
// history to path (to see where no linearization exists).
func WriteLinearizability(h *History, path string) error {
	h.mu.Lock()
	ops := retainedOps(h)
	h.mu.Unlock()
	_, info := porcupine.CheckOperationsVerbose(registerModel, ops, linearizeTimeout)
	f, err := os.CreateTemp(filepath.Dir(path), ".linearizability-*")
	if err != nil {
		return err
	}
	if err := porcupine.Visualize(registerModel, info, f); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
