package client

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// A subscriber that holds PUBCOMP for the QoS 2 messages at the head of
// its window while it acknowledges later QoS 1 ones still gets each topic
// in order, from Roost and from mosquitto set up as the order tests need
// it (keepOrder). With mosquitto 2.0.11's default set-up it fails ("b: 31
// after 20"), the shape of TestThousandsInOrder/mosquitto/3.1.1's rare
// "order/q1: 2533 after 2524" in CI: there the Roost client's QoS 2 flows
// awaiting PUBCOMP sit at the head of mosquitto's inflight list. The
// subscriber is raw so that its side is scripted, and legal: PUBREC and
// PUBACK in arrival order [MQTT-4.6.0-2, MQTT-4.6.0-3], PUBCOMP in PUBREL
// order.
func TestOrderBehindHeldQoS2(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"roost", "mosquitto"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tg := startTarget(t, name, []string{keepOrder})
			ctx := testCtx(t, 30*time.Second)
			s := &heldSub{c: mqtttest.Dial(t, strings.TrimPrefix(tg.URL(), "mqtt://"), packet.V311)}
			s.c.Connect(&packet.Connect{ClientID: "held", CleanStart: true})
			s.c.Subscribe("#", 2)
			s.start()
			pub := newClient(t, tg.URL(), packet.V311, nil)
			publish := func(topic string, q packet.QoS, i int) {
				if _, err := pub.Publish(ctx, Message{Topic: topic, QoS: q, Payload: []byte(strconv.Itoa(i))}); err != nil {
					t.Fatal(err)
				}
			}
			// Each completed before the next: the server queues them in
			// this order.
			for i := 1; i <= 40; i++ {
				publish("a", 2, i)
			}
			for i := 1; i <= 30; i++ {
				publish("b", 1, i)
			}
			// The counts in the comments are mosquitto 2.0.11's with its
			// default inflight limit of 20.
			s.read(time.Second) // a1-a20, PUBREC'd; PUBREL for each
			s.complete(1)       // a21-a40: it moves 20 from its queue, whatever its inflight list holds
			s.read(time.Second)
			s.complete(1) // b1-b20, behind a3-a40 awaiting PUBCOMP
			s.read(time.Second)
			s.acknowledge(1) // b1, 38 places in: quota freed, nothing moved from its queue (b21-b30)
			// Time for the server to take the PUBACK before the next
			// PUBLISH on the other connection.
			s.read(300 * time.Millisecond)
			publish("b", 1, 31)
			s.read(500 * time.Millisecond) // b31 takes the free quota ahead of b21-b30
			deadline := time.Now().Add(20 * time.Second)
			for s.distinct() < 71 {
				if time.Now().After(deadline) {
					t.Fatalf("%d of 71 messages arrived", s.distinct())
				}
				s.complete(len(s.pubrels))
				s.acknowledge(len(s.qos1))
				s.read(200 * time.Millisecond)
			}
			if err := s.inOrder(map[string]int{"a": 40, "b": 31}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// heldSub is a raw 3.1.1 subscriber that PUBRECs every QoS 2 message at
// once and sends PUBCOMP and PUBACK only when told, in order.
type heldSub struct {
	c       *mqtttest.Client
	in      chan packet.Packet
	got     []*packet.Publish
	pubrels []uint16 // PUBREL received, PUBCOMP not sent, in order
	qos1    []uint16 // QoS 1 received, PUBACK not sent, in order
}

// start reads the connection on a goroutine until it closes: one reader
// without read deadlines, as a deadline that expires mid-packet would
// leave the next read out of step.
func (s *heldSub) start() {
	s.in = make(chan packet.Packet, 256)
	go func() {
		defer close(s.in)
		for {
			p, err := s.c.R.ReadPacket(s.c.V)
			if err != nil {
				return
			}
			s.in <- p
		}
	}()
}

// read takes what the server sends for d.
func (s *heldSub) read(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		var p packet.Packet
		var ok bool
		select {
		case p, ok = <-s.in:
			if !ok {
				return
			}
		case <-t.C:
			return
		}
		switch p := p.(type) {
		case *packet.Publish:
			s.got = append(s.got, p)
			switch p.QoS {
			case 1:
				s.qos1 = append(s.qos1, p.PacketID)
			case 2:
				s.c.Send(&packet.Pubrec{PacketID: p.PacketID})
			}
		case *packet.Pubrel:
			s.pubrels = append(s.pubrels, p.PacketID)
		}
	}
}

// complete sends PUBCOMP for the n oldest PUBRELs.
func (s *heldSub) complete(n int) {
	for ; n > 0 && len(s.pubrels) > 0; n-- {
		s.c.Send(&packet.Pubcomp{PacketID: s.pubrels[0]})
		s.pubrels = s.pubrels[1:]
	}
}

// acknowledge sends PUBACK for the n oldest QoS 1 messages.
func (s *heldSub) acknowledge(n int) {
	for ; n > 0 && len(s.qos1) > 0; n-- {
		s.c.Send(&packet.Puback{PacketID: s.qos1[0]})
		s.qos1 = s.qos1[1:]
	}
}

// distinct counts the messages received, resent copies once.
func (s *heldSub) distinct() int {
	seen := map[string]bool{}
	for _, p := range s.got {
		seen[p.Topic+"/"+string(p.Payload)] = true
	}
	return len(seen)
}

// inOrder checks that each topic's payloads came as 1, 2, ... up to its
// count in want; a resent copy (DUP) of a message already seen is skipped.
func (s *heldSub) inOrder(want map[string]int) error {
	last := map[string]int{}
	for _, p := range s.got {
		i, _ := strconv.Atoi(string(p.Payload))
		if p.Dup && i <= last[p.Topic] {
			continue
		}
		if i != last[p.Topic]+1 {
			return fmt.Errorf("%s: %d after %d", p.Topic, i, last[p.Topic])
		}
		last[p.Topic] = i
	}
	for topic, n := range want {
		if last[topic] != n {
			return fmt.Errorf("%s: last %d, want %d", topic, last[topic], n)
		}
	}
	return nil
}
