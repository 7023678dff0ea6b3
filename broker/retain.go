package broker

import (
	"time"

	"github.com/roost-mqtt/roost/topic"
)

// retainer holds the last retained message per topic.
type retainer struct {
	msgs *topic.Retained[*Message]
}

func newRetainer() *retainer {
	return &retainer{msgs: new(topic.Retained[*Message])}
}

// set stores msg, or deletes the topic's retained message when the payload
// is empty [MQTT-3.3.1-6/7 (3.1.1: MQTT-3.3.1-10/11)].
func (r *retainer) set(msg *Message) {
	if len(msg.Payload) == 0 {
		r.msgs.Delete(msg.Topic)
		return
	}
	r.msgs.Set(msg.Topic, msg)
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
	for _, name := range expired {
		r.msgs.Delete(name)
	}
}

func (r *retainer) count() int { return r.msgs.Len() }
