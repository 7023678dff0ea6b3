package interop

import (
	"context"
	"encoding/json"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// will is a Last Will for any peer.
type will struct {
	topic   string
	payload string
	qos     byte
	retain  bool
}

// mosqSubOpts configure a mosquitto_sub peer.
type mosqSubOpts struct {
	id            string // default: a fresh unique id
	topics        []string
	qos           byte
	persistent    bool // -c: clean session 0 / clean start 0
	sessionExpiry int  // -x, MQTT 5 only
	keepalive     int  // -k, default 60
	subID         int  // MQTT 5 subscription identifier, 0 for none
	will          *will
	exitAfterSub  bool // -E: disconnect cleanly once SUBACK arrived
}

// mosqSub is a running mosquitto_sub.
type mosqSub struct {
	*proc
	in         *inbox
	subscribed chan struct{}
}

// startMosqSub starts mosquitto_sub and waits for its SUBACK (or, with
// exitAfterSub, for its clean exit).
func startMosqSub(t *testing.T, b *testBroker, p proto, o mosqSubOpts) *mosqSub {
	t.Helper()
	bin := requireTool(t, "mosquitto_sub")
	if o.id == "" {
		o.id = clientID("mosqsub")
	}
	if o.keepalive == 0 {
		o.keepalive = 60
	}
	args := append(b.mosqArgs(), "-V", p.mosqVersion(),
		"-i", o.id, "-q", strconv.Itoa(int(o.qos)), "-k", strconv.Itoa(o.keepalive), "-d", "-F", "%j")
	for _, tp := range o.topics {
		args = append(args, "-t", tp)
	}
	if o.persistent {
		args = append(args, "-c")
	}
	if o.sessionExpiry > 0 && p.level == 5 {
		args = append(args, "-x", strconv.Itoa(o.sessionExpiry))
	}
	if o.subID > 0 {
		args = append(args, "-D", "subscribe", "subscription-identifier", strconv.Itoa(o.subID))
	}
	if o.will != nil {
		args = append(args, "--will-topic", o.will.topic, "--will-payload", o.will.payload,
			"--will-qos", strconv.Itoa(int(o.will.qos)))
		if o.will.retain {
			args = append(args, "--will-retain")
		}
	}
	if o.exitAfterSub {
		args = append(args, "-E")
	}
	// mosquitto_sub flushes stdout only after a message; line-buffer it so
	// that "Subscribed" shows when it happens.
	args = append([]string{"-oL", bin}, args...)
	s := &mosqSub{in: newInbox("mosquitto_sub " + o.id), subscribed: make(chan struct{})}
	var once bool
	s.proc = startProc(t, "mosquitto_sub "+o.id, false, func(line string) {
		switch {
		case strings.HasPrefix(line, "{"):
			s.in.put(parseMosqJSON(line))
		case strings.HasPrefix(line, "Subscribed (mid") && !once:
			once = true
			close(s.subscribed)
		}
	}, requireTool(t, "stdbuf"), args...)
	if o.exitAfterSub {
		if !s.waitExit(10 * time.Second) {
			t.Fatalf("mosquitto_sub -E did not exit")
		}
		if s.err != nil {
			t.Fatalf("mosquitto_sub -E: %v", s.err)
		}
		return s
	}
	select {
	case <-s.subscribed:
	case <-s.exited:
		t.Fatalf("mosquitto_sub %s exited before SUBACK: %v", o.id, s.err)
	case <-time.After(10 * time.Second):
		t.Fatalf("mosquitto_sub %s: no SUBACK within 10s", o.id)
	}
	return s
}

// parseMosqJSON decodes a mosquitto_sub -F %j line; a line it cannot decode
// becomes a message on topic "!bad-json", which no test expects.
func parseMosqJSON(line string) message {
	var j struct {
		Topic      string `json:"topic"`
		QoS        byte   `json:"qos"`
		Retain     int    `json:"retain"`
		Payload    any    `json:"payload"`
		Properties struct {
			SubID  json.RawMessage `json:"subscription-identifier"`
			Expiry *uint32         `json:"message-expiry-interval"`
		} `json:"properties"`
	}
	if err := json.Unmarshal([]byte(line), &j); err != nil {
		return message{Topic: "!bad-json", Payload: line + ": " + err.Error()}
	}
	m := message{Topic: j.Topic, QoS: j.QoS, Retain: j.Retain != 0, Expiry: j.Properties.Expiry}
	switch pl := j.Payload.(type) {
	case string:
		m.Payload = pl
	case nil:
	default: // %j prints a payload that is valid JSON as JSON
		raw, _ := json.Marshal(pl)
		m.Payload = string(raw)
	}
	if len(j.Properties.SubID) > 0 {
		var one int
		if json.Unmarshal(j.Properties.SubID, &one) == nil {
			m.SubIDs = []int{one}
		} else {
			json.Unmarshal(j.Properties.SubID, &m.SubIDs)
		}
	}
	return m
}

// mosqPubOpts configure one mosquitto_pub run.
type mosqPubOpts struct {
	qos    byte
	retain bool
	expiry int // MQTT 5 message expiry interval, 0 for none
	id     string
}

// mosqPub publishes one message with mosquitto_pub and waits for it to
// finish (for QoS 1/2 that includes the acknowledgement flow). An empty
// payload is sent with -n, a zero-length message.
func mosqPub(t *testing.T, b *testBroker, p proto, topic, payload string, o mosqPubOpts) {
	t.Helper()
	bin := requireTool(t, "mosquitto_pub")
	if o.id == "" {
		o.id = clientID("mosqpub")
	}
	args := append(b.mosqArgs(), "-V", p.mosqVersion(),
		"-i", o.id, "-t", topic, "-q", strconv.Itoa(int(o.qos)))
	if payload == "" {
		args = append(args, "-n")
	} else {
		args = append(args, "-m", payload)
	}
	if o.retain {
		args = append(args, "-r")
	}
	if o.expiry > 0 {
		args = append(args, "-D", "publish", "message-expiry-interval", strconv.Itoa(o.expiry))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}
