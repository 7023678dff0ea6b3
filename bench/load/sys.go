package load

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// sysDroppedTopic is the broker's count of messages it dropped; Roost and
// mosquitto both publish it.
const sysDroppedTopic = "$SYS/broker/publish/messages/dropped"

// sysWatcher follows sysDroppedTopic on its own connection.
type sysWatcher struct {
	c    *mconn
	base time.Time
	last atomic.Int64 // latest value, -1 before the first
	at   atomic.Int64 // when it arrived, ns since base
}

func (r *runner) watchSys(ctx context.Context) (*sysWatcher, error) {
	c, err := r.open(ctx, "sys", 4096, 0)
	if err != nil {
		return nil, err
	}
	if err := c.subscribe(ctx, sysDroppedTopic, 0); err != nil {
		c.nc.Close()
		return nil, err
	}
	w := &sysWatcher{c: c, base: r.base}
	w.last.Store(-1)
	return w, nil
}

// run reads updates until the connection is stopped.
func (w *sysWatcher) run() {
	for {
		if err := w.c.fill(0); err != nil {
			return
		}
		for {
			h, body, ok, err := w.c.next()
			if err != nil {
				return
			}
			if !ok {
				break
			}
			if h.Type != packet.PUBLISH {
				continue
			}
			if _, payload, ok := publishView(h.Flags, body, w.c.v); ok {
				if n, err := strconv.ParseInt(strings.TrimSpace(string(payload)), 10, 64); err == nil {
					w.last.Store(n)
					w.at.Store(int64(time.Since(w.base)))
				}
			}
		}
	}
}

// value waits up to wait for an update that arrived after since (ns since
// base; use a negative since to accept any value) and returns the latest
// value, or ok false when there has never been one. Brokers that publish
// the count only when it changes (mosquitto) send nothing while there are
// no drops, which is why waiting out the timeout is not an error.
func (w *sysWatcher) value(ctx context.Context, since int64, wait time.Duration) (n int64, ok bool) {
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if w.last.Load() >= 0 && w.at.Load() > since {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	n = w.last.Load()
	return n, n >= 0
}
