package cluster

import (
	"github.com/roost-mqtt/roost/broker"
)

// A restored copy dropped here keeps its record in this node's own store
// while its hold keys cover the claimer.
//
// A restarted node that finds a restored session owned elsewhere (start)
// or claimed elsewhere before it settled (takeUnsettled) drops its copy
// and keeps the copy's hold keys out for cover (leaveKeepHeld): the
// claimer reads the session from the stream, then what was held for
// every node since the session's last op, and announces its interest
// only after. Those keys live in the node's memory. Killed again within
// the cover, the node came back without the copy, hence without the
// keys: the others dropped its orphan interest once its new interest was
// known, and while the claims of the session failed their stream reads
// (its partition electing after the kills) nobody held for it (test/jepsen
// TestClusterFull seed 548, session 26: ps0's owner n2 dropped its copy at
// 34.5 s, was killed at 40.3 s, and from 41.5 s until n3's claim read the
// session at 45.9 s its 32 messages were routed to nobody;
// bench/jepsen/RESULTS.md "l548"; TestReproDroppedCopyKilled).
//
// So the copy's end (its OpSessionDel) is kept from the node's own store
// until the cover ends: a restart meanwhile restores the copy, finds it
// owned elsewhere, drops it again and puts its hold keys out again for a
// new cover. The record goes when the keys go (leaveHeld), before any
// claim of the id here writes the owner record (else a restart after that
// write took the stale copy for this node's own session), and before any
// other op of the id reaches the store (a session adopted here would be
// merged into the stale record). A restart after the cover's end finds no
// record. Nothing else reads the own store while the node runs.

// dropRestored ends id's restored copy here, owned or claimed elsewhere:
// its hold keys stay for cover and its record with them (above). It
// reports whether the server had the copy.
func (s *sessions) dropRestored(id string) bool {
	covered := s.persist.leaveKeepHeld(id)
	// A claim of id here that began before (its unspare found nothing)
	// may have named this node in the owner record already: a copy kept
	// now would be taken for this node's session at a restart. One that
	// begins after ends the record (unspare).
	if o := s.n.own; o != nil && (o.claimRunning(id) || o.claimedHere(id)) {
		covered = false
	}
	s.mu.Lock()
	if covered {
		if s.spared == nil {
			s.spared = map[string]bool{}
		}
		s.spared[id] = false // its OpSessionDel comes next (endSessionLocked)
	}
	s.mu.Unlock()
	dropped := s.n.srv.EndSession(id, false)
	s.mu.Lock()
	if kept, ok := s.spared[id]; ok && !kept {
		delete(s.spared, id) // no end came: nothing to keep
	}
	s.mu.Unlock()
	return dropped
}

// sparedOpsLocked returns ops as this node's own store is to take them:
// the end of a copy dropped here (dropRestored) left out, and that end put
// back before any other op of the id. s.mu is held.
func (s *sessions) sparedOpsLocked(ops []broker.Op) []broker.Op {
	if len(s.spared) == 0 {
		return ops
	}
	var out []broker.Op
	for i := range ops {
		op := &ops[i]
		kept, ok := s.spared[op.ClientID]
		if !ok {
			if out != nil {
				out = append(out, *op)
			}
			continue
		}
		if out == nil {
			out = append(make([]broker.Op, 0, len(ops)+1), ops[:i]...)
		}
		switch {
		case op.Kind == broker.OpSessionDel && !kept:
			s.spared[op.ClientID] = true
			continue
		case kept && op.Kind != broker.OpSessionDel:
			out = append(out, broker.Op{Kind: broker.OpSessionDel, ClientID: op.ClientID})
			delete(s.spared, op.ClientID)
		case kept:
			delete(s.spared, op.ClientID)
		}
		out = append(out, *op)
	}
	if out == nil {
		return ops
	}
	return out
}

// unspare ends the record of id's dropped copy that this node's own store
// kept (dropRestored), durably, and reports whether there was one: its
// cover ended, or a claim of id here is about to name this node in the
// owner record.
func (s *sessions) unspare(id string) bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	kept, ok := s.spared[id]
	if !ok {
		s.mu.Unlock()
		return false
	}
	delete(s.spared, id)
	if !kept {
		s.mu.Unlock()
		return false
	}
	t := s.local.Append(broker.Op{Kind: broker.OpSessionDel, ClientID: id})
	s.mu.Unlock()
	if err := s.local.Wait(t); err != nil {
		s.n.log.Warn("cluster: the end of a dropped copy's record not durable", "client_id", id, "err", err)
	}
	s.n.log.Info("cluster: a dropped copy's record ended", "client_id", id)
	return true
}
