package broker

import (
	"sync"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// gatedLog is an idLog whose Wait, once armed, holds every ticket from
// the first op queued for client "psub" on until release is closed, and
// says when a wait is held (waiting).
type gatedLog struct {
	idLog
	gmu     sync.Mutex
	armed   bool
	gate    Ticket
	waiting chan struct{} // closed at the first held wait
	release chan struct{}
}

func newGatedLog() *gatedLog {
	return &gatedLog{waiting: make(chan struct{}), release: make(chan struct{})}
}

func (g *gatedLog) Append(ops ...Op) Ticket {
	t := g.idLog.Append(ops...)
	g.gmu.Lock()
	defer g.gmu.Unlock()
	for _, op := range ops {
		if g.armed && g.gate == 0 && op.Kind == OpQueuePut && op.ClientID == "psub" {
			g.gate = t
		}
	}
	return t
}

func (g *gatedLog) Wait(t Ticket) error {
	g.gmu.Lock()
	held := g.gate != 0 && t >= g.gate
	if held {
		select {
		case <-g.waiting:
		default:
			close(g.waiting)
		}
	}
	g.gmu.Unlock()
	if held {
		<-g.release
	}
	return nil
}

func (g *gatedLog) arm() {
	g.gmu.Lock()
	g.armed = true
	g.gmu.Unlock()
}

// TestQoS2RoutedAfterLocalCopies: a persistent publisher's QoS 2 id is
// journalled as routed (nonce 0) only once the copies the message queued
// here are durable, and before its PUBREC goes out (sg112: a node killed
// with the mark in and the copies not had the publisher's resend answered
// elsewhere without routing, the copies lost). The mark waits in the
// connection's output, where the PUBREC waits for the same copies, not in
// its read loop, which routes the publisher's next message meanwhile
// (docs/cluster.md, "What the publish path costs").
func TestQoS2RoutedAfterLocalCopies(t *testing.T) {
	t.Parallel()
	st := newGatedLog()
	cl := &originCluster{store: &st.idLog}
	_, addr := startServer(t, Options{Store: st, Cluster: cl})
	var once sync.Once
	release := func() { once.Do(func() { close(st.release) }) }
	t.Cleanup(release) // before the server's shutdown: a failure leaves the wait held
	sub := dial(t, addr, packet.V5)
	sub.Connect(&packet.Connect{ClientID: "psub", CleanStart: true, Properties: persist})
	sub.Subscribe("t", 2)
	sub.Send(&packet.Disconnect{})
	csub := dial(t, addr, packet.V5)
	csub.Connect(&packet.Connect{ClientID: "csub", CleanStart: true})
	csub.Subscribe("u", 0)
	pub := dial(t, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true, Properties: persist})

	st.arm()
	pub.Send(&packet.Publish{Topic: "t", QoS: 2, PacketID: 1, Payload: []byte("m")})
	select {
	case <-st.waiting:
	case <-time.After(10 * time.Second):
		t.Fatal("nothing waited for psub's queued copy")
	}
	// The read loop reads on meanwhile: a wait there held the
	// publisher to one message per replicated write.
	pub.Send(&packet.Publish{Topic: "u", Payload: []byte("next")})
	if p, ok := csub.Next(5 * time.Second).(*packet.Publish); !ok || string(p.Payload) != "next" {
		t.Fatalf("the publisher's next message not routed while id 1's mark waited for its copy: got %+v", p)
	}
	for _, op := range st.inbound("pub", 1) {
		if op.Nonce == 0 {
			t.Fatalf("id 1 journalled as routed (%+v) while its local copy was not durable", st.inbound("pub", 1))
		}
	}
	release()
	if a, ok := pub.Next(5 * time.Second).(*packet.Pubrec); !ok || a.ReasonCode != packet.Success {
		t.Fatalf("got %+v, want PUBREC 0x00", a)
	}
	ops := st.inbound("pub", 1)
	if last := ops[len(ops)-1]; last.Nonce != 0 {
		t.Fatalf("id 1's ops %+v when its PUBREC came, want it journalled as routed (nonce 0)", ops)
	}
}
