package hostile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/brokertest"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	rc "github.com/roost-mqtt/roost/internal/rawclient"
)

const (
	// waitFor bounds every wait for a packet or a close. It is well under
	// the brokers' 10 s connect timeout, so a close seen in time was the
	// broker's reaction to the bytes, not the timeout.
	waitFor = 3 * time.Second
	// quiet is how long an open connection is watched for packets that
	// must not come.
	quiet = 200 * time.Millisecond
)

// reaction is what the broker must do after a case's bytes, in order:
// maybe a CONNACK, then the listed replies, then either stay open or close
// (a 5.0 connection past CONNACK first sending DISCONNECT).
type reaction struct {
	// connack, when not nil, lists the CONNACK codes allowed as the first
	// packet; maybeConnack makes it optional (5.0 lets a server close a
	// malformed CONNECT with or without one [MQTT-3.1.4-1]).
	connack      []byte
	maybeConnack bool
	// replies are the packets that must follow, as first bytes
	// (type<<4|flags) and bodies; a nil body is not checked.
	replies []reply
	// open: the connection stays open and answers PINGREQ afterwards.
	open bool
	// disconnect lists the 5.0 DISCONNECT codes allowed before the close
	// of a connection past a successful CONNACK; 3.1.1 closes silently.
	disconnect []byte
}

type reply struct {
	first byte
	body  []byte
}

// silentClose: the connection is closed with no packet at all (3.1.1
// malformed CONNECT [MQTT-3.1.4-1], or anything before CONNECT
// [MQTT-3.1.0-1]).
func silentClose() reaction { return reaction{} }

// closedMaybeConnack: closed, optionally after a CONNACK with one of codes.
func closedMaybeConnack(codes ...byte) reaction {
	return reaction{connack: codes, maybeConnack: true}
}

// refused: a CONNACK with one of codes, then closed.
func refused(codes ...byte) reaction { return reaction{connack: codes} }

// accepted: CONNACK 0x00 and the connection stays open.
func accepted() reaction { return reaction{connack: []byte{0}, open: true} }

// disconnected: closed; a 5.0 client gets DISCONNECT with one of codes
// first (the SHOULD of [MQTT-4.13.1-1], which Roost always follows).
func disconnected(codes ...byte) reaction { return reaction{disconnect: codes} }

// answered: the replies come and the connection stays open.
func answered(rs ...reply) reaction { return reaction{replies: rs, open: true} }

// ignored: nothing comes back and the connection stays open.
func ignored() reaction { return reaction{open: true} }

// hostileCase is one entry of the corpus.
type hostileCase struct {
	name string
	// rule is the normative statement (or section) that fixes the
	// reaction, with the version it is numbered in.
	rule string
	v    byte // protocol level: 4 (3.1.1) or 5
	// connected: the harness first sends a good CONNECT and reads CONNACK
	// 0x00; bytes follow on the open connection.
	connected bool
	bytes     []byte
	want      reaction
	// opts, if set, adjusts the broker's options; the case gets a broker
	// of its own.
	opts func(*broker.Options)
	// deviation, when set, says how Roost departs from want today; the
	// case is skipped with that note until the broker is fixed.
	deviation string
}

// startBroker runs a Roost broker on 127.0.0.1:0 until the test ends.
func startBroker(t *testing.T, adjust func(*broker.Options)) (string, *mqtttest.LogBuffer) {
	t.Helper()
	logs := &mqtttest.LogBuffer{}
	opts := broker.Options{
		Logger:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		SysInterval: -1,
	}
	if adjust != nil {
		adjust(&opts)
	}
	_, addr := brokertest.Start(t, opts)
	return addr, logs
}

// goodConnect is the CONNECT the harness sends for connected cases.
func goodConnect(v byte, id string) []byte {
	return rc.Connect{Version: v, ClientID: id, Clean: true, KeepAlive: 60}.Bytes()
}

// run plays one case against the broker at addr.
func run(t *testing.T, addr string, tc hostileCase) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c, err := rc.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if tc.connected {
		if err := c.Write(goodConnect(tc.v, clientID(tc)), waitFor); err != nil {
			t.Fatal(err)
		}
		p, err := c.ReadPacket(waitFor)
		if err != nil || p.Type != rc.CONNACK || len(p.Body) < 2 || p.Body[1] != 0 {
			t.Fatalf("good CONNECT: %v %v", p, err)
		}
	}
	if err := c.Write(tc.bytes, waitFor); err != nil && !errors.Is(err, rc.ErrClosed) {
		t.Fatalf("write: %v", err)
	}
	check(t, c, tc)
}

func clientID(tc hostileCase) string {
	return fmt.Sprintf("h-%d-%s", tc.v, tc.name)
}

// check reads what the broker sends and compares it with tc.want.
func check(t *testing.T, c *rc.Conn, tc hostileCase) {
	t.Helper()
	w := tc.want
	var got []rc.Packet
	if w.open {
		// Everything the case provokes comes before the PINGRESP.
		if err := c.Write([]byte{0xC0, 0x00}, waitFor); err != nil {
			t.Fatalf("connection closed, want it open: %v", err)
		}
		for {
			p, err := c.ReadPacket(waitFor)
			if err != nil {
				t.Fatalf("after %v: %v, want the connection open and a PINGRESP", got, err)
			}
			if p.Type == rc.PINGRESP {
				break
			}
			got = append(got, p)
		}
	} else {
		var err error
		got, err = c.ExpectClosed(waitFor)
		if err != nil {
			t.Fatalf("after %v: %v, want the connection closed", got, err)
		}
	}
	rest := got
	if w.connack != nil {
		if len(rest) > 0 && rest[0].Type == rc.CONNACK {
			if b := rest[0].Body; len(b) < 2 || !slices.Contains(w.connack, b[1]) {
				t.Fatalf("CONNACK %v, want a code in % X", rest[0], w.connack)
			}
			rest = rest[1:]
		} else if !w.maybeConnack {
			t.Fatalf("got %v, want a CONNACK first (code one of % X)", got, w.connack)
		}
	}
	for _, r := range w.replies {
		if len(rest) == 0 {
			t.Fatalf("got %v, want a %s", got, rc.TypeName(r.first>>4))
		}
		p := rest[0]
		rest = rest[1:]
		if p.Type<<4|p.Flags != r.first || r.body != nil && string(p.Body) != string(r.body) {
			t.Fatalf("got %v, want first byte %02X body % X", p, r.first, r.body)
		}
	}
	if !w.open && w.disconnect != nil && tc.v == 5 {
		if len(rest) == 0 || rest[0].Type != rc.DISCONNECT {
			t.Fatalf("got %v, want DISCONNECT (one of % X) before the close", got, w.disconnect)
		}
		d, err := rc.ParseDisconnect(rest[0].Body)
		if err != nil || !slices.Contains(w.disconnect, d.Code) {
			t.Fatalf("DISCONNECT %v (%v), want a code in % X", rest[0], err, w.disconnect)
		}
		if rs, ok := d.Props.Get(rc.PropReasonString); ok {
			t.Logf("DISCONNECT 0x%02X %q", d.Code, rs.Str)
		}
		rest = rest[1:]
	}
	if len(rest) > 0 {
		t.Fatalf("unexpected packets %v (all: %v)", rest, got)
	}
}

// seedName is the corpus file name of a case's fuzz seed.
func seedName(tc hostileCase) string {
	return "hostile-v" + string('0'+tc.v) + "-" + strings.ReplaceAll(tc.name, "/", "-")
}

// seedFile is a case's fuzz seed for FuzzConnection(vsel byte, data
// []byte): vsel 1 is MQTT 3.1.1, 2 is 5.0 (the fuzzer sends its own good
// CONNECT first).
func seedFile(tc hostileCase) string {
	vsel := byte(1)
	if tc.v == 5 {
		vsel = 2
	}
	return fmt.Sprintf("go test fuzz v1\nbyte(%q)\n[]byte(%q)\n", rune(vsel), tc.bytes)
}
