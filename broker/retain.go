package broker

import (
	"strings"
	"sync"
	"time"

	"github.com/roost-mqtt/roost/topic"
)

// retainer holds the last retained message per topic.
type retainer struct {
	msgs  *topic.Retained[*Message]
	store Store // nil: not persisted
	// mu makes a change and its store op one step, so the store sees
	// changes to a topic in the order they happened.
	mu sync.Mutex
}

func newRetainer(st Store) *retainer {
	return &retainer{msgs: new(topic.Retained[*Message]), store: st}
}

// set stores msg, or deletes the topic's retained message when the payload
// is empty [MQTT-3.3.1-6/7 (3.1.1: MQTT-3.3.1-10/11)].
// It returns the store ticket of the change.
func (r *retainer) set(msg *Message) Ticket {
	r.mu.Lock()
	defer r.mu.Unlock()
	persist := r.store != nil && !strings.HasPrefix(msg.Topic, "$SYS/")
	if len(msg.Payload) == 0 {
		if r.msgs.Delete(msg.Topic) && persist {
			return r.store.Append(Op{Kind: OpRetainDel, Topic: msg.Topic})
		}
		return 0
	}
	r.msgs.Set(msg.Topic, msg)
	if persist {
		return r.store.Append(Op{Kind: OpRetainPut, Msg: msg})
	}
	return 0
}

// match calls fn for each live retained message matching filter; expired
// ones are removed instead.
func (r *retainer) match(filter string, fn func(*Message)) {
	now := time.Now()
	var expired []string
	r.msgs.MatchFilter(filter, func(name string, m *Message) {
		if m.expired(now) {
			expired = append(expired, name)
			return
		}
		fn(m)
	})
	if len(expired) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, name := range expired {
		// Only if no newer message replaced it meanwhile.
		if m, ok := r.msgs.Get(name); ok && m.expired(now) {
			r.msgs.Delete(name)
			if r.store != nil {
				r.store.Append(Op{Kind: OpRetainDel, Topic: name})
			}
		}
	}
}

func (r *retainer) count() int { return r.msgs.Len() }
