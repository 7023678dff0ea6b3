package broker

import (
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/roost-mqtt/roost/packet"
	"github.com/roost-mqtt/roost/topic"
)

// Reasons a retained message is not stored (Options.MaxRetained and
// Options.MaxRetainedBytes).
var (
	errRetainedCount = errors.New("retained message limit reached (max_retained)")
	errRetainedBytes = errors.New("retained byte limit reached (max_retained_bytes)")
)

// retainer holds the last retained message per topic.
type retainer struct {
	msgs  *topic.Retained[*Message]
	store Store // nil: not persisted
	// mu makes a change and its store op one step, so the store sees
	// changes to a topic in the order they happened. It also guards n and
	// bytes.
	mu sync.Mutex
	// n and bytes are the retained messages outside $SYS and their
	// retainedSize total: what the limits apply to.
	n, bytes int
	// last is the store ticket of the latest persisted change (see
	// lastTicket).
	last Ticket
}

func newRetainer(st Store) *retainer {
	return &retainer{msgs: new(topic.Retained[*Message]), store: st}
}

// retainLimits are Options.MaxRetained and MaxRetainedBytes after fill:
// negative means unlimited.
type retainLimits struct{ count, bytes int }

func (s *Server) retainLimits() retainLimits {
	return retainLimits{count: s.opts.MaxRetained, bytes: s.opts.MaxRetainedBytes}
}

// retainedSize is what m counts towards Options.MaxRetainedBytes: its
// topic and payload, as for MaxQueuedBytes, plus the variable-length
// properties kept with it, so that a small payload with large user
// properties is not free.
func retainedSize(m *Message) int {
	n := len(m.Topic) + len(m.Payload)
	if p := m.Props; p != nil {
		n += len(p.ContentType) + len(p.ResponseTopic) + len(p.CorrelationData)
		for _, u := range p.User {
			n += len(u.Key) + len(u.Value)
		}
	}
	return n
}

func isSysTopic(name string) bool { return strings.HasPrefix(name, "$SYS/") }

// account adds (sign 1) or removes (sign -1) m from the totals the limits
// apply to; $SYS messages are the broker's own and not counted. r.mu must
// be held.
func (r *retainer) account(m *Message, sign int) {
	if isSysTopic(m.Topic) {
		return
	}
	r.n += sign
	r.bytes += sign * retainedSize(m)
}

// set stores msg, or deletes the topic's retained message when the payload
// is empty [MQTT-3.3.1-6/7 (3.1.1: MQTT-3.3.1-10/11)], whatever the limits.
// It returns the store ticket of the change.
func (r *retainer) set(msg *Message) Ticket {
	t, _ := r.put(msg, retainLimits{count: -1, bytes: -1})
	return t
}

// put is set within lim. The limits apply to growth only: a message for a
// topic with no retained message is refused when there are already
// lim.count, or when it would take the total over lim.bytes
// (errRetainedCount, errRetainedBytes).
// Clearing always works, and so does replacing, unless the new message is
// larger than the old one by more than the room left under lim.bytes —
// otherwise replacing small messages with large ones would defeat the byte
// limit. Such a replacement is refused and the old message is cleared all
// the same: a retained message stands for the topic's latest value
// [MQTT-3.3.1-5], and serving the older one to new subscribers after
// current subscribers got the newer one would be wrong. $SYS topics are
// neither limited nor counted.
func (r *retainer) put(msg *Message, lim retainLimits) (Ticket, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sys := isSysTopic(msg.Topic)
	persist := r.store != nil && !sys
	old, had := r.msgs.Get(msg.Topic)
	var err error
	if len(msg.Payload) > 0 && !sys {
		err = r.admit(msg, old, had, lim)
	}
	if len(msg.Payload) == 0 || err != nil {
		if !had {
			return 0, err
		}
		r.msgs.Delete(msg.Topic)
		r.account(old, -1)
		if persist {
			r.last = r.store.Append(Op{Kind: OpRetainDel, Topic: msg.Topic})
			return r.last, err
		}
		return 0, err
	}
	r.msgs.Set(msg.Topic, msg)
	if had {
		r.account(old, -1)
	}
	r.account(msg, 1)
	if persist {
		r.last = r.store.Append(Op{Kind: OpRetainPut, Msg: msg})
		return r.last, nil
	}
	return 0, nil
}

// admits reports whether put would refuse msg for lim (errRetainedCount,
// errRetainedBytes), changing nothing.
func (r *retainer) admits(msg *Message, lim retainLimits) error {
	if len(msg.Payload) == 0 || isSysTopic(msg.Topic) {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old, had := r.msgs.Get(msg.Topic)
	return r.admit(msg, old, had, lim)
}

// lastTicket is the store ticket of the latest retained change. A new
// subscription's output waits for it (conn.needDurable), so that no
// client sees a retained value, or the absence of one, that a crash
// before the sync would take back: a reader would have seen a change
// that, after the restart, never happened. Call it after collecting the
// messages to serve: a change that put a collected message in the tree
// holds r.mu until its op is appended, so last is at least its ticket.
func (r *retainer) lastTicket() Ticket {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// admit reports whether msg, replacing old (when had), fits lim. r.mu must
// be held.
func (r *retainer) admit(msg, old *Message, had bool, lim retainLimits) error {
	if !had && lim.count >= 0 && r.n >= lim.count {
		return errRetainedCount
	}
	grow := retainedSize(msg)
	if had {
		grow -= retainedSize(old)
	}
	if grow > 0 && lim.bytes >= 0 && r.bytes+grow > lim.bytes {
		return errRetainedBytes
	}
	return nil
}

// restore puts a message loaded from the store, counting it but ignoring
// the limits: what was retained before a restart stays retained even if
// the limits were lowered meanwhile.
func (r *retainer) restore(m *Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, had := r.msgs.Get(m.Topic); had {
		r.account(old, -1)
	}
	r.msgs.Set(m.Topic, m)
	r.account(m, 1)
}

// usage returns how many retained messages (outside $SYS) there are and
// their retainedSize total.
func (r *retainer) usage() (n, bytes int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n, r.bytes
}

// matching returns the live retained messages matching filter; expired
// ones are removed instead. The tree's read lock is held only while they
// are collected: the caller authorizes and delivers them afterwards, with
// no lock held, as the router does. Calling the Authorizer or taking a
// session lock inside the walk would break DESIGN.md's lock order, and a
// slow Authorizer would hold the lock that every retained PUBLISH must
// take to store its message.
func (r *retainer) matching(filter string) []*Message {
	now := time.Now()
	var live []*Message
	var expired []string
	r.msgs.MatchFilter(filter, func(name string, m *Message) {
		if m.expired(now) {
			expired = append(expired, name)
			return
		}
		live = append(live, m)
	})
	r.dropExpired(expired, now)
	return live
}

// listing returns up to limit (<= 0: all) live retained messages matching
// filter in topic order, walking the store no further than it needs to:
// the admin API's first page of a million retained messages reads about a
// page, not a million. Expired ones met on the way are removed.
func (r *retainer) listing(filter string, limit int) []*Message {
	now := time.Now()
	var live []*Message
	var expired []string
	r.msgs.MatchFilterSorted(filter, func(name string, m *Message) bool {
		if m.expired(now) {
			expired = append(expired, name)
			return true
		}
		live = append(live, m)
		return limit <= 0 || len(live) < limit
	})
	r.dropExpired(expired, now)
	return live
}

// dropExpired removes the retained messages of names that expired by now,
// unless a newer message replaced one meanwhile.
func (r *retainer) dropExpired(names []string, now time.Time) {
	if len(names) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, name := range names {
		// Only if no newer message replaced it meanwhile.
		if m, ok := r.msgs.Get(name); ok && m.expired(now) {
			r.msgs.Delete(name)
			r.account(m, -1)
			if r.store != nil {
				r.store.Append(Op{Kind: OpRetainDel, Topic: name})
			}
		}
	}
}

func (r *retainer) count() int { return r.msgs.Len() }

// noteRetainRefused counts a retained message a limit kept from being
// stored, and logs the first and then every 1000th, as session drops are.
func (s *Server) noteRetainRefused(msg *Message, why error) {
	n := s.stats.retainedRefused.Add(1)
	if n != 1 && n%1000 != 0 {
		return
	}
	count, bytes := s.ret.usage()
	s.log.Warn("not retaining message: "+why.Error(), "topic", msg.Topic, "client_id", msg.From,
		"retained", count, "retained_bytes", bytes, "max_retained", s.opts.MaxRetained,
		"max_retained_bytes", s.opts.MaxRetainedBytes, "refused_total", n)
}

// publishCode is the PUBACK/PUBREC reason for a PUBLISH routed to n
// sessions, notRetained saying whether it asked to be retained and a limit
// refused that.
//
// A refused retain is not a failed publish: the message was delivered to
// every matching subscription, like any other. Answering 0x97 Quota
// exceeded then would tell the publisher the message was not accepted
// (every reason code of 0x80 or more is a failure [MQTT-4.13]); a client
// that retries a failed publish would deliver it twice, and for QoS 2 a
// failed PUBREC ends the exchange after the message went out, which is the
// duplicate exactly-once forbids. So the answer is the usual one and the
// refusal is counted and logged only. The exception is a message that
// reached no session at all (n == 0): then not retaining it means the
// publish had no effect whatsoever, so an MQTT 5 publisher gets 0x97 —
// a true failure it may retry without duplicates, and the only way it
// learns that the state it meant to leave for later subscribers is not
// there. 3.1.x has no failure reason in PUBACK/PUBREC: those publishers
// get the plain acknowledgement.
func (c *conn) publishCode(n int, notRetained error) packet.ReasonCode {
	if notRetained != nil && n == 0 && c.version == packet.V5 {
		return packet.QuotaExceeded
	}
	return matchCode(n)
}

// forgetInQoS2 releases an inbound QoS 2 packet id whose PUBREC carries a
// failure code: that ends the exchange, so the client may reuse the id
// at once and no PUBREL will come.
func (c *conn) forgetInQoS2(pid uint16) {
	ss := c.sess
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.inQoS2(), pid)
	if ss.persisted() {
		ss.record(Op{Kind: OpInboundDel, PacketID: pid})
	}
}

// warnRetainedOver logs a warning when the retained messages restored at
// start-up are over Options.MaxRetained or MaxRetainedBytes (the limits
// were lowered, or the store holds more than they allow). All of them are
// kept; new topics are refused until clearing brings the totals under.
func (s *Server) warnRetainedOver() {
	n, bytes := s.ret.usage()
	lim := s.retainLimits()
	if (lim.count >= 0 && n > lim.count) || (lim.bytes >= 0 && bytes > lim.bytes) {
		s.log.Warn("restored retained messages exceed the retained limits; keeping all, refusing new retained topics until under",
			"retained", n, "retained_bytes", bytes, "max_retained", lim.count, "max_retained_bytes", lim.bytes)
	}
}
