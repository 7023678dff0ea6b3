package harness

import (
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session/state"
	"github.com/roost-mqtt/roost/internal/clustertest"
)

// ResumeInBackground resumes the persistent session id on nd from another
// goroutine, trying every 100 ms for up to 60 s until a CONNACK says
// Session Present, and sends the client on the returned channel (closed
// instead if it never did): the test keeps publishing meanwhile.
func ResumeInBackground(t *testing.T, nd *Node, id string, expiry uint32) <-chan *Client {
	return ResumeSessionInBackground(t, nd, id, expiry, nil)
}

// ResumeSessionInBackground is ResumeInBackground with the client's
// session state in st, as the client of the session's previous
// connection had it (clustertest.DialSession); that client must be done.
func ResumeSessionInBackground(t *testing.T, nd *Node, id string, expiry uint32, st *state.State) <-chan *Client {
	back := make(chan *Client, 1)
	go func() {
		for d := time.Now().Add(60 * time.Second); time.Now().Before(d); time.Sleep(100 * time.Millisecond) {
			c, ack, err := clustertest.DialSession(t, nd.MQTT, &paho.Connect{ClientID: id, CleanStart: false, KeepAlive: 30,
				Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}, st)
			if err != nil {
				continue
			}
			if ack.ReasonCode != 0 || !ack.SessionPresent {
				c.Disconnect(&paho.Disconnect{})
				continue
			}
			back <- WrapClient(c)
			return
		}
		close(back)
	}()
	return back
}

// ReceiveAll reads c's messages (probes skipped) until each of want came
// at least once or d passed. It returns how often each payload came and
// the messages of want that never did.
func ReceiveAll(c *Client, want []string, d time.Duration) (got map[string]int, lost []string) {
	got, _, lost = ReceiveAllOrder(c, want, d)
	return got, lost
}

// ReceiveAllOrder is ReceiveAll that also returns the payloads in the
// order of their first arrivals.
func ReceiveAllOrder(c *Client, want []string, d time.Duration) (got map[string]int, order, lost []string) {
	got, order, lost, _ = ReceiveAllProgress(c, want, d, d)
	return got, order, lost
}

// ReceiveAllProgress is ReceiveAllOrder with a wait that ends idle after
// the last message of want that came first (or after the call, if none
// did), or at most after the call, or once c's connection has ended and
// its inbox is read, whichever is sooner: a slow delivery that keeps
// coming is waited for, a stalled one or a closed connection is not. It
// also returns when the last of want's messages came, after the call
// (zero if none).
func ReceiveAllProgress(c *Client, want []string, idle, most time.Duration) (got map[string]int, order, lost []string, last time.Duration) {
	got = map[string]int{}
	start := time.Now()
	end := time.NewTimer(idle)
	defer end.Stop()
	limit := time.After(most)
	missing := len(want)
	take := func(p *paho.Publish) {
		s := string(p.Payload)
		if s == "probe" {
			return
		}
		if got[s] == 0 {
			order = append(order, s)
			if slices.Contains(want, s) {
				missing--
				last = time.Since(start)
				end.Reset(idle)
			}
		}
		got[s]++
	}
	lostOf := func() []string {
		if missing == 0 {
			return nil
		}
		return slices.DeleteFunc(slices.Clone(want), func(s string) bool { return got[s] > 0 })
	}
	for missing > 0 {
		select {
		case p := <-c.In:
			take(p)
		case <-c.Done():
			// Nothing more comes: read what came before the end.
			for more := true; more; {
				select {
				case p := <-c.In:
					take(p)
				default:
					more = false
				}
			}
			return got, order, lostOf(), last
		case <-end.C:
			return got, order, lostOf(), last
		case <-limit:
			return got, order, lostOf(), last
		}
	}
	return got, order, nil, last
}
