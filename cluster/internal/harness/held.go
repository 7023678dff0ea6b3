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
	got = map[string]int{}
	deadline := time.After(d)
	for missing := len(want); missing > 0; {
		select {
		case p := <-c.In:
			s := string(p.Payload)
			if s == "probe" {
				continue
			}
			if got[s] == 0 {
				order = append(order, s)
				if slices.Contains(want, s) {
					missing--
				}
			}
			got[s]++
		case <-deadline:
			return got, order, slices.DeleteFunc(slices.Clone(want), func(s string) bool { return got[s] > 0 })
		}
	}
	return got, order, nil
}
