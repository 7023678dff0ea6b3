package cluster

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Sessions of a dead node.
//
// A node that dies holds client ids nobody reconnects: their wills must
// still be published, after their delay, and their sessions must still
// expire (and keep queueing messages meanwhile). So each node runs a
// janitor: once a node it heard from has been silent for Config.AdoptAfter
// (or, once after start, for records naming nodes it never heard from), it
// reads the ownership records, and for each id whose owner is gone and for
// which it is the chosen survivor (rendezvous hash of the id over the live
// nodes, so that survivors share the work without talking), it claims the
// id as a connect would (compare-and-set, epoch + 1: the dead node is
// fenced should it come back) and adopts the session from its partition
// stream. Adopt then publishes a will whose connection died with its node
// (now without a delay, else after it, unless the client's reconnection
// resumes the session first) and starts the session's expiry. A client
// that reconnects anywhere takes the session from the adopter as from any
// owner. The compare-and-set makes one survivor win when two views differ.
// The will of a connection whose session ended with it is in its owner
// record instead, and published the same way (cleanwill.go).

const (
	// janitorEvery: how often the janitor looks at the nodes it hears.
	janitorEvery = time.Second
)

// janitor adopts the sessions of nodes gone for Config.AdoptAfter, until the node
// stops. It starts once the session streams are open.
func (s *sessions) janitor() {
	defer s.n.wg.Done()
	t := time.NewTicker(janitorEvery)
	defer t.Stop()
	started := time.Now()
	seen := map[string]bool{}
	missing := map[string]time.Time{} // seen nodes now silent, since when
	adopted := map[string]bool{}      // silent nodes whose sessions were adopted
	startupScan := true
	for {
		select {
		case <-s.n.ctx.Done():
			return
		case now := <-t.C:
			live := map[string]bool{s.n.cfg.Node: true}
			for _, name := range s.n.remote.nodes() {
				live[name], seen[name] = true, true
				delete(missing, name)
				delete(adopted, name)
			}
			scan := startupScan && now.Sub(started) >= s.n.cfg.AdoptAfter
			for name := range seen {
				if live[name] {
					continue
				}
				if missing[name].IsZero() {
					missing[name] = now
				}
				if !adopted[name] && now.Sub(missing[name]) >= s.n.cfg.AdoptAfter {
					scan = true
				}
			}
			if !scan {
				continue
			}
			if err := s.adoptOrphans(live, seen, missing, startupScan); err != nil {
				s.n.log.Warn("cluster: sessions of silent nodes not adopted yet; retrying", "err", err)
				continue
			}
			startupScan = false
			for name := range missing {
				if now.Sub(missing[name]) >= s.n.cfg.AdoptAfter && !adopted[name] {
					adopted[name] = true
					s.dropOrphanLater(name)
				}
			}
		}
	}
}

// dropOrphanLater stops holding messages for dead node's sessions
// heldGrace from now: the janitor adopted its share of them, and the
// adopters' interest reaches this node meanwhile (held.go). A node that
// came back meanwhile keeps its fresh interest.
func (s *sessions) dropOrphanLater(dead string) {
	time.AfterFunc(heldGrace, func() {
		if !slices.Contains(s.n.remote.nodes(), dead) {
			s.n.remote.orphans.drop(dead)
		}
	})
}

// adoptOrphans adopts the sessions owned by silent nodes that fall to this
// node. Owners this node heard from count as silent once missing for
// Config.AdoptAfter; others (never heard from since this node started) only on
// the startup scan.
func (s *sessions) adoptOrphans(live, seen map[string]bool, missing map[string]time.Time, startup bool) error {
	kv := s.n.own.bucket()
	if kv == nil {
		return errNotReady
	}
	ctx, cancel := context.WithTimeout(s.n.ctx, 30*time.Second)
	defer cancel()
	type orphan struct{ id, owner string }
	var mine []orphan
	now := time.Now()
	err := s.eachOwner(ctx, func(id, owner string, _ uint64, will bool) {
		if owner == s.n.cfg.Node && will && startup {
			// Maybe the will of a connection this node lost when it
			// was killed and restarted within adopt_after, before any
			// survivor saw it silent (cleanwill.go): adoptOrphan tells.
			mine = append(mine, orphan{id, owner})
			return
		}
		if owner == "" || live[owner] {
			return
		}
		if seen[owner] && now.Sub(missing[owner]) < s.n.cfg.AdoptAfter || !seen[owner] && !startup {
			return
		}
		if adopterOf(id, live) == s.n.cfg.Node {
			mine = append(mine, orphan{id, owner})
		}
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, o := range mine {
		// One by one, this can outlast the owner's absence (a node
		// restarting with 100,000 sessions is back after adopt_after):
		// a node heard from again keeps what was not adopted yet.
		if slices.Contains(s.n.remote.nodes(), o.owner) {
			continue
		}
		if err := s.adoptOrphan(o.id, o.owner); err != nil {
			errs = append(errs, fmt.Errorf("%q of %s: %w", o.id, o.owner, err))
		}
	}
	return errors.Join(errs...) // the next scan tries those again
}

// eachOwner calls fn for every owner record, reading the bucket's stream
// from its leader (the last message per key, readAll): a key-value
// watcher's "initial values done" marker was seen not to come while the
// bucket changed leader, and a replica may be stale.
func (s *sessions) eachOwner(ctx context.Context, fn func(id, owner string, epoch uint64, will bool)) error {
	s.mu.Lock()
	js := s.js
	s.mu.Unlock()
	if js == nil {
		return errNotReady
	}
	const stream, prefix = "KV_" + ownBucket, "$KV." + ownBucket + "."
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("owner records: %w", err)
	}
	if st.CachedInfo().State.Msgs == 0 {
		return nil
	}
	err = readAll(ctx, js, stream, jetstream.ConsumerConfig{FilterSubject: prefix + ">",
		DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy}, func(m jetstream.Msg) error {
		if op := m.Headers().Get(kvOperationHdr); op != "" {
			return nil // a deleted or purged key
		}
		id, err := keyID(m.Subject()[len(prefix):])
		if err != nil {
			return nil
		}
		if owner, epoch, will, err := decodeOwnerWill(m.Data()); err == nil {
			fn(id, owner, epoch, will != nil)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("owner records: %w", err)
	}
	return nil
}

// adopterOf chooses the live node that adopts id: the highest hash of id
// and the node's name (rendezvous hashing: removing a node moves only its
// share).
func adopterOf(id string, live map[string]bool) string {
	var best string
	var bestH uint64
	for node := range live {
		h := fnv.New64a()
		h.Write([]byte(id))
		h.Write([]byte{0})
		h.Write([]byte(node))
		if v := h.Sum64(); best == "" || v > bestH || v == bestH && node < best {
			best, bestH = node, v
		}
	}
	return best
}

// adoptOrphan claims id from dead, its owner, and adopts its session from
// the stream, unless the record changed (the client reconnected). The
// session is read before the claim: a read that fails (the partition is
// electing a leader) leaves the record naming the dead node, for the next
// scan to try again.
func (s *sessions) adoptOrphan(id, dead string) error {
	ctx, cancel := context.WithTimeout(s.n.ctx, s.n.cfg.ForwardTimeout)
	defer cancel()
	o := s.n.own
	kv := o.bucket()
	key := ownerKey(id)
	owner, epoch, will, rev, err := o.readWill(ctx, key)
	if err != nil {
		return err
	}
	if owner != dead {
		return nil // reconnected elsewhere meanwhile
	}
	if dead == s.n.cfg.Node && (will == nil || !o.leftover(id, epoch)) {
		return nil // a connection of this node's since it started
	}
	if will != nil {
		// Only a connection whose session ends with it has its will in
		// the record (cleanwill.go): there is no session to read.
		return s.adoptCleanWill(ctx, kv, id, dead, epoch, rev, will)
	}
	rec, last, err := s.recoverAt(ctx, id)
	if err != nil {
		return err
	}
	if rec == nil {
		// A clean session's record (or an ended session's): nothing to
		// adopt, and the id stays its owner's, should that node come
		// back with the client still connected.
		return nil
	}
	epoch++
	o.noteEpoch(id, epoch)
	if _, err := kv.Update(ctx, key, encodeOwner(s.n.cfg.Node, epoch), rev); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return nil // another node or a connect won
		}
		return err
	}
	s.setEpoch(id, epoch)
	s.adopt(id)
	s.n.srv.Adopt(rec)
	s.takeHeld(ctx, id, last, dead)
	s.n.log.Info("session of a silent node adopted", "client_id", id, "from", dead, "epoch", epoch,
		"subscriptions", len(rec.Subs), "messages", len(rec.Queue), "will", rec.Will != nil)
	return nil
}
