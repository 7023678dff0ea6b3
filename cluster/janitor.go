package cluster

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/topic"
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
// stream, with what publishers held for it meanwhile read ahead of its
// adoption (adoptAhead). Adopt then publishes a will whose connection died
// with its node (now without a delay, else after it, unless the client's
// reconnection resumes the session first) and starts the session's
// expiry. A client that reconnects anywhere takes the session from the
// adopter as from any owner (or, while the adopter still reads, from the
// stream). The compare-and-set makes one survivor win when two views differ.
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
	leftScan := true
	for {
		select {
		case <-s.n.ctx.Done():
			return
		case now := <-t.C:
			s.settleUnsureWills()
			if leftScan {
				if err := s.adoptLeftHere(); err != nil {
					s.n.log.Warn("cluster: sessions whose records name this node not adopted yet; retrying", "err", err)
				} else {
					leftScan = false
				}
			}
			live := map[string]bool{s.n.cfg.Node: true}
			for _, name := range s.n.remote.nodes() {
				live[name], seen[name] = true, true
				delete(missing, name)
				delete(adopted, name)
			}
			// Heard from before this loop's first tick (it starts
			// once the session streams are open, and ticks a second
			// later) counts as seen too: a node that died in between
			// was left to the startup scan, which adopted its records
			// but never ended the orphan interest kept for it
			// (dropOrphanLater): every matching QoS 1/2 message was
			// held for it until it came back.
			for _, name := range s.n.remote.heardNodes() {
				seen[name] = true
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

// ownerScan is one owner record as a scan of the bucket read it: rev is
// its revision, for a compare-and-set on exactly what was read.
type ownerScan struct {
	id, owner  string
	epoch, rev uint64
	will       *broker.Message // the will of a clean session (cleanwill.go)
}

// adoptOrphans adopts the sessions owned by silent nodes that fall to this
// node. Owners this node heard from count as silent once missing for
// Config.AdoptAfter; others (never heard from since this node started) only on
// the startup scan.
//
// It scales with the sessions rather than with round trips per session:
// one pass over the owner records finds them all (with the revisions the
// claims compare against, so no read per id), one pass per partition
// stream reads their sessions (adoptSessions), and the claims go out
// adoptParallel at a time. One by one, each id cost a record read, a
// consumer on its subject and a claim, about 2 s under load: hours for a
// dead node's share of 100,000 sessions, their wills and expiries waiting.
func (s *sessions) adoptOrphans(live, seen map[string]bool, missing map[string]time.Time, startup bool) error {
	if s.n.own.bucket() == nil {
		return errNotReady
	}
	ctx, cancel := context.WithTimeout(s.n.ctx, ownersReadMax)
	defer cancel()
	began := time.Now()
	var wills, persistent []ownerScan
	now := time.Now()
	err := s.eachOwnerRec(ctx, func(r ownerScan) {
		if r.owner == s.n.cfg.Node && r.will != nil && startup {
			// Maybe the will of a connection this node lost when it
			// was killed and restarted within adopt_after, before any
			// survivor saw it silent (cleanwill.go): leftover tells.
			if s.n.own.leftover(r.id, r.epoch) {
				wills = append(wills, r)
			}
			return
		}
		if r.owner == "" || live[r.owner] {
			return
		}
		if seen[r.owner] && now.Sub(missing[r.owner]) < s.n.cfg.AdoptAfter || !seen[r.owner] && !startup {
			return
		}
		if adopterOf(r.id, live) != s.n.cfg.Node {
			return
		}
		if r.will != nil {
			// Only a connection whose session ends with it has its
			// will in the record (cleanwill.go): there is no session.
			wills = append(wills, r)
		} else {
			persistent = append(persistent, r)
		}
	})
	if err != nil {
		return err
	}
	if len(wills)+len(persistent) == 0 {
		return nil
	}
	scanned := time.Since(began)
	errs := []error{s.adoptCleanWills(ctx, wills)}
	st, err := s.adoptSessions(ctx, persistent)
	errs = append(errs, err)
	s.n.log.Info("cluster: records of silent nodes handled", "clean_wills", len(wills), "sessions", len(persistent),
		"adopted", st.adopted, "took", time.Since(began).Round(time.Millisecond), "scan", scanned.Round(time.Millisecond),
		"read", st.read.Round(time.Millisecond), "claims", st.claims.Round(time.Millisecond), "held", st.held.Round(time.Millisecond))
	return errors.Join(errs...) // the next scan tries those again
}

// adoptLeftHere adopts, once after the node started, the persistent
// sessions whose owner records name this node but which are not in its
// server and were not claimed here since it started: a claim here wrote
// the record, and the node was killed before the adoption put the session
// in its store. Nothing else holds for such a session: the node restored
// nothing for it (no interest, no hold keys), and the others' cover for
// the dead node (its orphan interest, their hold keys) ends once it is
// back; every QoS 1/2 message for it was acknowledged and held for nobody
// until some claim read the stream (bench/jepsen/RESULTS.md "norec";
// TestReproOwnerRestartedWithout). Adopted as the janitor adopts a silent
// node's share, with this node as the silent one: the claim's compare-and-
// set loses to a client's claim since the scan, and what was held for
// this node while it was down is read ahead.
func (s *sessions) adoptLeftHere() error {
	if s.n.own.bucket() == nil {
		return errNotReady
	}
	ctx, cancel := context.WithTimeout(s.n.ctx, ownersReadMax)
	defer cancel()
	began := time.Now()
	var left []ownerScan
	err := s.eachOwnerRec(ctx, func(r ownerScan) {
		// A will in the record: a clean session's, which has none.
		if r.owner != s.n.cfg.Node || r.will != nil || s.n.srv.HasSession(r.id) || s.n.own.claimedHere(r.id) ||
			s.n.fault.leavesUnadopted(r.id) {
			return
		}
		left = append(left, r)
	})
	if err != nil || len(left) == 0 {
		return err
	}
	st, err := s.adoptSessions(ctx, left)
	s.n.log.Info("cluster: sessions whose records name this node, not restored here, handled", "sessions", len(left),
		"adopted", st.adopted, "first", left[0].id, "took", time.Since(began).Round(time.Millisecond))
	return err
}

// adoptParallel bounds the claims (and will publications) in flight at
// once: each is a replicated write, synced by a majority, that JetStream
// batches with the others in flight on the same stream.
const adoptParallel = 64

// eachParallel calls fn for each of rs, adoptParallel at a time, skipping
// those whose owner is heard from again (a node restarting with many
// sessions is back after adopt_after: it keeps what was not claimed yet),
// and joins their errors.
func (s *sessions) eachParallel(rs []ownerScan, fn func(ownerScan) error) error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	sem := make(chan struct{}, adoptParallel)
	back := map[string]bool{}
	var checked time.Time
	for _, r := range rs {
		if time.Since(checked) > 100*time.Millisecond {
			clear(back)
			for _, name := range s.n.remote.nodes() {
				back[name] = true
			}
			checked = time.Now()
		}
		if back[r.owner] || s.n.ctx.Err() != nil {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := fn(r); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%q of %s: %w", r.id, r.owner, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 8 {
		errs = append(errs[:8], fmt.Errorf("and %d more", len(errs)-8))
	}
	return errors.Join(errs...)
}

// claimOrphan claims r.id from r.owner, a silent node, at the revision the
// scan read (compare-and-set, epoch + 1: one survivor wins, and the dead
// node is fenced should it come back). It reports false, without an
// error, when the record changed since: the client reconnected somewhere,
// or another node won; false with an error and the claim's epoch when its
// write was not confirmed, and may have applied.
//
// From the write until the session is in the server here (adoptAhead),
// this node holds the id's record but not its session: the id is marked
// unread, as for a connect's claim (owner.go claimWill), so that a release
// request meanwhile is told to read the session from the stream.
func (s *sessions) claimOrphan(ctx context.Context, r ownerScan) (epoch uint64, ok bool, err error) {
	o := s.n.own
	kv := o.bucket()
	// One claim of an id at a time on this node: a connect's claim here
	// waits, then finds this one's record and takes the session itself.
	unlock, err := o.lockClaim(ctx, r.id)
	if err != nil {
		return 0, false, err
	}
	defer unlock()
	s.unspare(r.id) // before the record names this node (spared.go)
	epoch = r.epoch + 1
	o.noteEpoch(r.id, epoch)
	was := o.isUnread(r.id)
	o.setUnread(r.id, true)
	ctx, cancel := context.WithTimeout(ctx, s.n.cfg.ForwardTimeout)
	defer cancel()
	_, err = kv.Update(ctx, ownerKey(r.id), encodeOwner(s.n.cfg.Node, epoch), r.rev)
	if err == nil && s.n.fault.unconfirmsClaim(r.id) {
		err = errFaultClaimUnconfirmed
	}
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			o.setUnread(r.id, was)
			return 0, false, nil
		}
		// Not confirmed, maybe applied: the mark stays, and a claim
		// that finds this node in the record reads the stream; a
		// clean will's claim reads the record again (unsureWills),
		// told by the epoch.
		return epoch, false, err
	}
	s.setEpoch(r.id, epoch, true)
	return epoch, true, nil
}

// adoptSessions reads the sessions of rs from their partition streams and
// claims and adopts each. The sessions are read before the claims: a read
// that fails (the partition is electing a leader) leaves the records
// naming the dead node, for the next scan to try again. A record that
// changed after the scan (the client reconnected elsewhere) fails its
// compare-and-set: the session read for it is dropped.
func (s *sessions) adoptSessions(ctx context.Context, rs []ownerScan) (adoptStats, error) {
	var st adoptStats
	byPart := map[int][]ownerScan{}
	for _, r := range rs {
		p := s.partition(r.id)
		byPart[p] = append(byPart[p], r)
	}
	var errs []error
	for p, prs := range byPart {
		t0 := time.Now()
		recs, err := s.readSessions(ctx, p, prs)
		st.read += time.Since(t0)
		if err != nil {
			errs = append(errs, fmt.Errorf("sessions of partition %d: %w", p, err))
			continue
		}
		for chunk := range slices.Chunk(prs, adoptChunkSize) {
			errs = append(errs, s.adoptChunk(ctx, chunk, recs, &st))
		}
	}
	return st, errors.Join(errs...)
}

// adoptStats: what adoptSessions did and where its time went, for the log.
type adoptStats struct {
	adopted            int
	read, claims, held time.Duration
}

// adoptChunkSize: the sessions claimed, given their held messages and
// adopted together. Until a chunk's held reads end, its sessions are in
// no server (hold keys stand in for their interest, and a client's claim
// meanwhile reads the stream itself), so a chunk is small enough for its
// reads to end in moments.
const adoptChunkSize = 256

// claimedOrphan is a session of a dead node this node's janitor claimed.
type claimedOrphan struct {
	adoptedSession
	dead  string
	epoch uint64
}

// adoptChunk claims the sessions of rs, read into recs, and adopts each
// with what was held for it (adoptAhead); st counts.
func (s *sessions) adoptChunk(ctx context.Context, rs []ownerScan, recs map[string]adoptedSession, st *adoptStats) error {
	var (
		mu      sync.Mutex
		claimed = map[string][]claimedOrphan{} // by the node they come from
		ids     []string
	)
	t0 := time.Now()
	err := s.eachParallel(rs, func(r ownerScan) error {
		rec := recs[r.id]
		if rec.rec == nil {
			// A clean session's record (or an ended session's):
			// nothing to adopt, and the id stays its owner's,
			// should that node come back with the client still
			// connected.
			return nil
		}
		epoch, ok, err := s.claimOrphan(ctx, r)
		if !ok || err != nil {
			return err
		}
		mu.Lock()
		claimed[r.owner] = append(claimed[r.owner], claimedOrphan{rec, r.owner, epoch})
		ids = append(ids, r.id)
		mu.Unlock()
		return nil
	})
	st.claims += time.Since(t0)
	if len(ids) == 0 {
		return err
	}
	t0 = time.Now()
	s.claimHoldAll(claimed)
	if s.n.fault.janitorLates(ids) {
		s.n.log.Warn("cluster: test fault: the janitor's held reads wait for a release request", "sessions", len(ids))
		s.n.fault.awaitJanitorAsked()
	}
	for dead, cs := range claimed {
		st.adopted += s.adoptAhead(ctx, cs, dead)
	}
	st.held += time.Since(t0)
	return err
}

// claimHoldAll puts out the filters of the sessions claimed as hold keys
// of this node until they are adopted (claimhold.go): until then no node
// announces their interest, and the other survivors stop holding for the
// dead node heldGrace after their own scan, whatever this one's reads
// take. The other persistent sessions here are watched once for the
// chunk, as claimHold does for one.
func (s *sessions) claimHoldAll(claimed map[string][]claimedOrphan) {
	mine := map[string]bool{}
	for _, cs := range claimed {
		for _, c := range cs {
			mine[c.rec.ClientID] = true
		}
	}
	until := time.Now().Add(s.n.heldWatch() + s.persist.cover)
	others := s.persistentHere()
	s.n.gate.Lock()
	for _, c := range others {
		if !mine[c] {
			s.n.watch.watch(c, until)
		}
	}
	s.n.gate.Unlock()
	for _, cs := range claimed {
		for _, c := range cs {
			s.persist.claimKeepHeld(c.rec.ClientID, c.rec.Subs)
		}
	}
}

// adoptAhead adopts cs, sessions of dead claimed here, with what was held
// for them: the held subjects are read ahead for all of them at once (one
// read per subject), before the sessions are in the server, and what they
// hold for each is delivered in the same step as its adoption, as a
// connect's claim does for one session (heldahead.go); the subjects are
// then followed for heldWatch. A session whose client claimed the id
// elsewhere meanwhile is not adopted: the release request found it
// unread, and that claim reads the stream and the held subjects itself.
// Put in the server first and read after, a session handed over while
// the reads went on (its release request waits heldWaitMax for them, and
// they took seconds under load) left without what they then gave to the
// copy here, which ended: every message held for the dead node up to the
// handover lost (TestClusterTransports/NodeKill: 281 of 346 for mqtt.js
// 5; TestReproJanitorHeldLate). It returns how many it adopted.
func (s *sessions) adoptAhead(ctx context.Context, cs []claimedOrphan, dead string) int {
	n := s.n
	subs := topic.NewTree[string, time.Time]()
	recs := make(map[string]*broker.StoredSession, len(cs))
	since := cs[0].last
	for _, c := range cs {
		id := c.rec.ClientID
		n.claimQueued(ctx, c.rec) // before it is in the server (claimQueued)
		recs[id] = c.rec
		since = minTime(since, c.last)
		for _, sub := range c.rec.Subs {
			if !strings.HasPrefix(sub.Filter, "$share/") { // groups are served on live nodes
				subs.Subscribe(sub.Filter, "", id, c.last)
			}
		}
	}
	nodes := append(append(n.remote.heardNodes(), n.remote.orphans.nodes()...), n.cfg.Node, dead)
	slices.Sort(nodes)
	nodes = slices.DeleteFunc(slices.Compact(nodes), func(node string) bool { return node == "" })
	reads := make([]heldChunkRead, 0, len(nodes))
	for _, node := range nodes {
		rctx, cancel := context.WithTimeout(ctx, n.cfg.ForwardTimeout)
		r := s.readAheadFor(rctx, node, since, subs, recs)
		cancel()
		n.log.Debug("cluster: messages held for a node read ahead for a silent node's sessions", "sessions", len(cs),
			"first", cs[0].rec.ClientID, "peer", node, "since", since, "next", r.next, "err", r.err)
		if r.err != nil {
			n.log.Warn("cluster: messages held for a node not read yet; following", "sessions", len(cs), "peer", node, "err", r.err)
		}
		reads = append(reads, r)
	}
	until := time.Now().Add(n.heldWatch())
	n.gate.Lock()
	in, w := s.beginAdoptAll(cs)
	delivered := map[string]int{}
	for _, c := range in {
		id := c.rec.ClientID
		s.adopt(id)
		n.srv.Adopt(c.rec)
		// Watched from here: a message published here from now on
		// reaches the session locally (originWatch.first).
		n.watch.arrive(id, until)
		for _, r := range reads {
			for _, h := range r.msgs[id] {
				if n.deliverAhead(id, h) {
					delivered[id]++
				}
			}
		}
	}
	n.gate.Unlock()
	if w != nil {
		defer w.finish()
	}
	for _, r := range reads {
		for _, c := range in {
			s.joinFollower(r.node, c.rec.ClientID, until, r.next, since, c.last, r.err != nil, w)
		}
	}
	for _, c := range cs {
		adopted := slices.ContainsFunc(in, func(a claimedOrphan) bool { return a.rec.ClientID == c.rec.ClientID })
		s.claimHoldEnd(c.rec.ClientID, adopted)
		if !adopted {
			n.log.Info("cluster: session of a silent node not adopted: its client id was claimed again meanwhile",
				"client_id", c.rec.ClientID, "from", dead)
			continue
		}
		n.log.Info("session of a silent node adopted", "client_id", c.rec.ClientID, "from", dead,
			"epoch", c.epoch, "subscriptions", len(c.rec.Subs), "messages", len(c.rec.Queue),
			"held", delivered[c.rec.ClientID], "will", c.rec.Will != nil)
	}
	return len(in)
}

// beginAdoptAll is owners.beginAdopt for the janitor's sessions cs: it
// returns those whose claim still stands (their unread mark not taken by
// a release request, no newer claim of theirs seen here), taking their
// marks, and the wait a release request for them waits on (awaitHeld)
// until what was held reached them; nil when none stands.
func (s *sessions) beginAdoptAll(cs []claimedOrphan) ([]claimedOrphan, *heldWait) {
	o := s.n.own
	o.mu.Lock()
	defer o.mu.Unlock()
	var in []claimedOrphan
	var ids []string
	for _, c := range cs {
		id := c.rec.ClientID
		if !o.unread[id] || o.epochs[id].epoch != c.epoch || o.overtaken[id] > c.epoch {
			continue
		}
		delete(o.unread, id)
		delete(o.overtaken, id)
		in = append(in, c)
		ids = append(ids, id)
	}
	if len(in) == 0 {
		return nil, nil
	}
	return in, newHeldWait(o.holdReleaseLocked(ids))
}

// adoptedSession is a session read from its partition stream: last is when
// the stream took its last op (held.go).
type adoptedSession struct {
	rec  *broker.StoredSession
	last time.Time
}

// readFewMax: up to this many sessions of one partition are read one by
// one, each from its own subject (a few requests each); more, and one
// pass over the partition's session subjects is cheaper.
const readFewMax = 8

// readSessions reads the sessions of rs, all in partition p: a nil rec
// for an id with none.
func (s *sessions) readSessions(ctx context.Context, p int, rs []ownerScan) (map[string]adoptedSession, error) {
	out := make(map[string]adoptedSession, len(rs))
	if len(rs) <= readFewMax {
		for _, r := range rs {
			rctx, cancel := context.WithTimeout(ctx, s.n.cfg.ForwardTimeout)
			rec, last, err := s.recoverAt(rctx, r.id)
			cancel()
			if err != nil {
				return nil, err
			}
			out[r.id] = adoptedSession{rec, last}
		}
		return out, nil
	}
	s.mu.Lock()
	js := s.js
	s.mu.Unlock()
	if js == nil {
		return nil, errNotReady
	}
	replays := make(map[string]*replay, len(rs))
	lasts := make(map[string]time.Time, len(rs))
	for _, r := range rs {
		replays[s.subject(r.id)] = newReplay(r.id)
	}
	// Session subjects only (owner keys begin "c."), not the held ones.
	filter := sessPrefix + "." + strconv.Itoa(p) + ".c.>"
	err := readAll(ctx, js, streamName(p), jetstream.ConsumerConfig{FilterSubject: filter}, func(m jetstream.Msg) error {
		r := replays[m.Subject()]
		if r == nil {
			return nil // another session of the partition
		}
		before := r.applied
		if err := r.applyStored(m); err != nil {
			return fmt.Errorf("session record of %q: %w", r.id, err)
		}
		if md, err := m.Metadata(); err == nil {
			lasts[r.id] = r.lastOp(before, opTime(m, md.Timestamp), lasts[r.id])
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, r := range replays {
		if r.skipped > 0 {
			s.n.log.Info("session record: skipped ops of a previous owner written after it lost the id", "client_id", r.id, "ops", r.skipped)
		}
		r.logPassed(s.n.log)
		out[r.id] = adoptedSession{r.session(), lasts[r.id]}
	}
	return out, nil
}

// heldChunkRead is what one node's held subject held for a chunk of
// sessions (readAheadFor), by session.
type heldChunkRead struct {
	node string
	next uint64 // the sequence after the last one read (0: none)
	err  error
	msgs map[string][]heldAhead
}

// readAheadFor reads node's held subject from since on for the sessions
// in subs (their filters, with the time of each one's last op; recs,
// their records): each message goes to those matching it whose last op
// came before it (what was held before reached a session when its node
// applied it), a kept copy to its own session only (keep.go), with the
// session's share groups claimed (claimFor).
func (s *sessions) readAheadFor(ctx context.Context, node string, since time.Time, subs *topic.Tree[string, time.Time], recs map[string]*broker.StoredSession) heldChunkRead {
	r := heldChunkRead{node: node, msgs: map[string][]heldAhead{}}
	s.mu.Lock()
	js := s.js
	s.mu.Unlock()
	if js == nil {
		r.err = errNotReady
		return r
	}
	r.err = readAll(ctx, js, streamName(s.partition(node)), s.heldReadConfig(node, 0, since), func(m jetstream.Msg) error {
		md, err := m.Metadata()
		if err != nil {
			return err
		}
		k, rm, err := decodeHeld(m.Data())
		if err != nil {
			s.n.log.Warn("cluster: held message unreadable; skipped", "peer", node, "err", err)
			r.next = md.Sequence.Stream + 1
			return nil
		}
		at, only := heldTime(m, md.Timestamp), heldFor(m) // a kept copy's: when it was taken (keep.go)
		var in []string
		subs.Match(rm.Topic, func(_, _ string, id string, last time.Time) {
			if at.After(last) && (only == "" || only == id) && !slices.Contains(in, id) {
				in = append(in, id)
			}
		})
		for _, id := range in {
			c := *rm // each session's own: delivering it sets its pick
			h := heldAhead{k: k, rm: &c, at: md.Timestamp, had: recordHas(recs[id], rm)}
			if c.Groups, err = s.n.claimFor(k, rm.Origin, rm.Groups, shareMembers(recs[id]), h.had, id, only); err != nil {
				return err // the follower reads on from here
			}
			r.msgs[id] = append(r.msgs[id], h)
		}
		r.next = md.Sequence.Stream + 1
		return nil
	})
	return r
}

// shareMembers returns rec's share subscriptions ("$share/group/filter").
func shareMembers(rec *broker.StoredSession) map[string]bool {
	members := map[string]bool{}
	for _, sub := range rec.Subs {
		if strings.HasPrefix(sub.Filter, "$share/") {
			members[sub.Filter] = true
		}
	}
	return members
}

// eachOwner calls fn for every owner record (eachOwnerRec).
func (s *sessions) eachOwner(ctx context.Context, fn func(id, owner string, epoch uint64, will bool)) error {
	return s.eachOwnerRec(ctx, func(r ownerScan) { fn(r.id, r.owner, r.epoch, r.will != nil) })
}

// eachOwnerRec calls fn for every owner record, reading the bucket's stream
// from its leader (the last message per key, readAll): a key-value
// watcher's "initial values done" marker was seen not to come while the
// bucket changed leader, and a replica may be stale.
func (s *sessions) eachOwnerRec(ctx context.Context, fn func(ownerScan)) error {
	s.mu.Lock()
	js := s.js
	s.mu.Unlock()
	if js == nil {
		return errNotReady
	}
	const stream, prefix = "KV_" + ownBucket, "$KV." + ownBucket + "."
	// One attempt's bound: while the bucket elects a leader (its leader
	// died with the node) the request gets no answer at all, and the
	// caller's bound is long (a pass over 100,000 records).
	sctx, cancel := context.WithTimeout(ctx, followAttempt)
	st, err := js.Stream(sctx, stream)
	cancel()
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
		owner, epoch, will, err := decodeOwnerWill(m.Data())
		if err != nil {
			return nil
		}
		md, err := m.Metadata()
		if err != nil {
			return err
		}
		// A key's revision is its message's stream sequence.
		fn(ownerScan{id: id, owner: owner, epoch: epoch, rev: md.Sequence.Stream, will: will})
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
