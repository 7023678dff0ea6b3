package client

import (
	"errors"
	"net"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// fakeServer is a scripted MQTT 5 server: the test reads the client's
// packets and writes the answers itself.
type fakeServer struct {
	t  *testing.T
	ln net.Listener
}

func newFakeServer(t *testing.T) *fakeServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &fakeServer{t: t, ln: ln}
}

func (s *fakeServer) URL() string { return "mqtt://" + s.ln.Addr().String() }

// accept takes the next connection, reads its CONNECT and answers with ca.
func (s *fakeServer) accept(ca *packet.Connack) (*mqtttest.Client, *packet.Connect) {
	s.t.Helper()
	if tl, ok := s.ln.(*net.TCPListener); ok {
		tl.SetDeadline(time.Now().Add(10 * time.Second))
	}
	nc, err := s.ln.Accept()
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { nc.Close() })
	c := &mqtttest.Client{T: s.t, NC: nc, R: packet.NewReader(nc, 1<<20), V: packet.V5}
	cp, ok := c.Next(5 * time.Second).(*packet.Connect)
	if !ok {
		s.t.Fatal("first packet is not CONNECT")
	}
	c.Send(ca)
	return c, cp
}

func connackRecvMax(n uint16, present bool) *packet.Connack {
	ca := &packet.Connack{SessionPresent: present}
	ca.Properties.Set(packet.PropReceiveMaximum)
	ca.Properties.ReceiveMaximum = n
	return ca
}

// The server's Receive Maximum drops from 10 to 3 across a reconnect. The
// client resends the unacknowledged publishes (PUBLISH with DUP, PUBREL
// for those already PUBREC'd) in their original order with their original
// packet identifiers, never more than 3 flows open at once, the rest
// following as acknowledgements free the quota; every Publish completes.
func TestReceiveMaximumShrinksOnReconnect(t *testing.T) {
	t.Parallel()
	srv := newFakeServer(t)
	ctx := testCtx(t, 30*time.Second)
	c, err := New(Options{Servers: []string{srv.URL()}, KeepSession: true, ClientID: "rm",
		Reconnect: Backoff{Min: 10 * time.Millisecond, Max: 10 * time.Millisecond, Jitter: -1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Disconnect(ctx) })
	c.Start()
	conn1, _ := srv.accept(connackRecvMax(10, false))

	const n = 12
	results := make(chan error, n)
	for i := range n {
		// QoS 2 for even i, QoS 1 for odd; queued one at a time so the
		// call order is the send order.
		go func() {
			_, err := c.Publish(ctx, Message{Topic: "rm/" + strconv.Itoa(i), QoS: packet.QoS(2 - i%2)})
			results <- err
		}()
		eventually(t, 5*time.Second, func() error {
			if st := c.Stats(); st.Queued+st.Inflight <= i {
				return errors.New("not queued yet")
			}
			return nil
		})
	}

	// Connection 1: 10 PUBLISHes (the quota), PUBREC for the first two
	// QoS 2 ones, whose PUBRELs follow; then nothing more.
	var order1 []uint16
	qos := map[uint16]packet.QoS{}
	recs := 0
	for len(order1) < 10 || recs < 2 {
		switch p := conn1.Next(5 * time.Second).(type) {
		case *packet.Publish:
			if p.Dup {
				t.Errorf("first send of %d has DUP", p.PacketID)
			}
			order1 = append(order1, p.PacketID)
			qos[p.PacketID] = p.QoS
			if p.QoS == 2 && recs < 2 {
				recs++
				conn1.Send(&packet.Pubrec{PacketID: p.PacketID})
			}
		case *packet.Pubrel:
			// expected after our PUBREC
		default:
			t.Fatalf("connection 1: unexpected %v", p.Type())
		}
	}
	// Read the second PUBREL if it is still on its way.
	for {
		p, err := conn1.Read(300 * time.Millisecond)
		if err != nil {
			break
		}
		if _, ok := p.(*packet.Pubrel); !ok {
			t.Fatalf("connection 1: %v %d beyond Receive Maximum 10", p.Type(), packetID(p))
		}
	}
	conn1.NC.Close()

	// Connection 2: Receive Maximum 3.
	conn2, cp := srv.accept(connackRecvMax(3, true))
	if cp.CleanStart {
		t.Fatal("reconnect with Clean Start")
	}
	open := map[uint16]string{} // id -> "pub" (QoS 1 or 2 awaiting PUBREC), "rel" (awaiting PUBCOMP)
	var arrival []uint16        // ids in the order their flow (re)started
	done := 0
	ackOldest := func() {
		for _, id := range arrival {
			switch open[id] {
			case "pub":
				if qos[id] == 1 {
					conn2.Send(&packet.Puback{PacketID: id})
					delete(open, id)
					done++
				} else {
					conn2.Send(&packet.Pubrec{PacketID: id})
					open[id] = "sent-rec"
				}
				return
			case "rel":
				conn2.Send(&packet.Pubcomp{PacketID: id})
				delete(open, id)
				done++
				return
			}
		}
	}
	// Acknowledge only when the client has been quiet for a while, so a
	// flow beyond the quota would show up before the ack that allows it.
	for done < n {
		p, err := conn2.Read(150 * time.Millisecond)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if len(open) == 0 {
				t.Fatalf("stalled with %d of %d complete", done, n)
			}
			ackOldest()
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		switch p := p.(type) {
		case *packet.Publish:
			id := p.PacketID
			if _, dup := open[id]; dup {
				t.Fatalf("PUBLISH %d twice", id)
			}
			wasSent := slices.Contains(order1, id)
			if p.Dup != wasSent {
				t.Errorf("PUBLISH %d: DUP %v, sent before %v", id, p.Dup, wasSent)
			}
			qos[id] = p.QoS
			open[id] = "pub"
			arrival = append(arrival, id)
		case *packet.Pubrel:
			switch open[p.PacketID] {
			case "sent-rec":
				open[p.PacketID] = "rel"
			case "":
				open[p.PacketID] = "rel" // resent from connection 1
				arrival = append(arrival, p.PacketID)
			default:
				t.Fatalf("PUBREL %d in state %s", p.PacketID, open[p.PacketID])
			}
		default:
			t.Fatalf("connection 2: unexpected %v", p.Type())
		}
		if len(open) > 3 {
			t.Fatalf("%d flows open, Receive Maximum is 3: %v", len(open), open)
		}
	}
	if !slices.Equal(arrival[:10], order1) {
		t.Errorf("resent in order %v, first sent in %v", arrival[:10], order1)
	}
	for range n {
		if err := <-results; err != nil {
			t.Errorf("Publish: %v", err)
		}
	}
	if st := c.Stats(); st.Inflight != 0 || st.Queued != 0 {
		t.Errorf("stats after all acknowledged: %+v", st)
	}
}
