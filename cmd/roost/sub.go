package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/roost-mqtt/roost/client"
	"github.com/roost-mqtt/roost/packet"
	"github.com/roost-mqtt/roost/topic"
)

const subHelp = `Subscribes to one or more topics (-t, repeatable) and prints every message
received, reconnecting if the connection is lost, until interrupted, -C
messages were printed or -W seconds passed. Flags are those of
mosquitto_sub; unlike it, the protocol defaults to MQTT 5 (-V 311 for 3.1.1).

Output: the payload; -v "topic payload"; -F a format where %t topic, %p
payload, %q QoS, %r retain, %l length, %m message id, %x/%X hex payload,
%j JSON, %J JSON with MQTT 5 properties (the payload must be JSON), %I
ISO 8601 time, %U Unix time, %C content type, %R response topic, %D
correlation data, %E message expiry, %F payload format, %P user
properties, %S subscription identifiers, %% a percent sign; \n \t \\
escapes. A newline follows each message unless -N.

Exit status: 0 after -C messages, -E, or an interrupt; the CONNACK code
when the broker refuses the connection (5 or 135 for not authorised); 1
on another connection or usage error; 27 when -W expires, as
mosquitto_sub.`

// exitTimeout is mosquitto_sub's exit status when -W expires.
const exitTimeout = 27

func runSub(ctx context.Context, args []string, std stdio) int {
	stdout, stderr := std.out, std.err
	fs := newFlagSet("sub", "", subHelp, stderr)
	var cf connFlags
	cf.register(fs, true)
	var (
		verbose      = fs.Bool("v", false, "print \"topic payload\"")
		format       = fs.String("F", "", "output `format`, see above")
		noEOL        = fs.Bool("N", false, "do not add a newline after each message")
		count        = fs.Int("C", 0, "exit after printing `n` messages")
		timeout      = fs.Int("W", 0, "exit with status 27 after `seconds`")
		noRetained   = fs.Bool("R", false, "do not print retained (stale) messages")
		exitSub      = fs.Bool("E", false, "exit once the subscriptions are acknowledged")
		retainedOnly = fs.Bool("retained-only", false, "print only retained messages, exit at the first other one")
		rmRetained   = fs.Bool("remove-retained", false, "clear each retained message received (publish an empty retained message on its topic)")
		filterOut    []string
		unsubscribe  []string
	)
	fs.Func("T", "do not print messages on topics matching `filter` (repeatable)", func(s string) error {
		filterOut = append(filterOut, s)
		return nil
	})
	fs.Func("U", "unsubscribe from `topic` once connected, after subscribing to -t (repeatable); with -c this removes\n"+
		"a subscription the session kept from before", func(s string) error {
		unsubscribe = append(unsubscribe, s)
		return nil
	})
	if code, ok := cf.parse(fs, args); !ok {
		return code
	}
	if len(cf.topics) == 0 {
		fmt.Fprintln(stderr, "Error: You must specify a topic to subscribe to.")
		fmt.Fprintln(stderr, "Use 'roost sub -h' to see usage.")
		return 1
	}
	f := *format
	if f == "" {
		f = "%p"
		if *verbose {
			f = "%t %p"
		}
	}
	pr := &printer{w: stdout, format: f, eol: !*noEOL, verbose: *verbose && *format == ""}

	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(*timeout)*time.Second)
		defer cancel()
	}
	c, code := cf.connect(ctx, stderr, stderr)
	if c == nil {
		if ctx.Err() == context.DeadlineExceeded && *timeout > 0 {
			fmt.Fprintln(stderr, "Timed out")
			return exitTimeout
		}
		return code
	}
	defer cf.disconnect(c)
	cf.clientID = c.ClientID()

	done := make(chan int, 1)
	var mu sync.Mutex
	printed, finished := 0, false
	finish := func(code int) {
		if !finished {
			finished = true
			done <- code
		}
	}
	handle := func(m *client.Message) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case finished:
			return
		case *retainedOnly && !m.Retain:
			finish(0)
			return
		case *noRetained && m.Retain, filteredOut(filterOut, m.Topic):
			return
		}
		if *rmRetained && m.Retain {
			// As mosquitto_sub: QoS 1, retained, empty. Handlers may publish
			// (the client's network goroutines do not wait for them).
			if _, err := c.Publish(ctx, client.Message{Topic: m.Topic, QoS: 1, Retain: true}); err != nil {
				fmt.Fprintf(stderr, "Error: removing retained message on %s: %v\n", m.Topic, err)
			}
		}
		if err := pr.print(m, cf.clientID); err != nil {
			fmt.Fprintf(stderr, "Error: %v\n", err)
			return
		}
		if printed++; *count > 0 && printed >= *count {
			finish(0)
		}
	}
	subs := make([]client.Subscription, len(cf.topics))
	for i, t := range cf.topics {
		subs[i] = client.Subscription{Filter: t, QoS: packet.QoS(cf.qos), Handler: handle}
	}
	var subProps, unsubProps packet.Properties
	if cf.v5() {
		subProps, unsubProps = cf.props.subscribe, cf.props.unsubscribe
	}
	codes, err := c.SubscribeWithProperties(ctx, subProps, subs...)
	if cf.debug {
		fmt.Fprintf(stderr, "Client %s received SUBACK %v\n", c.ClientID(), codes)
	}
	if err != nil && ctx.Err() == nil {
		cf.fail(stderr, err)
		if len(codes) == 0 {
			return 1
		}
	}
	if len(unsubscribe) > 0 {
		// After the SUBSCRIBE, as mosquitto_sub sends them: -t x -U x
		// ends unsubscribed.
		codes, err := c.UnsubscribeWithProperties(ctx, unsubProps, unsubscribe...)
		if cf.debug {
			fmt.Fprintf(stderr, "Client %s received UNSUBACK %v\n", c.ClientID(), codes)
		}
		if err != nil && ctx.Err() == nil {
			cf.fail(stderr, err)
		}
	}
	if *exitSub && err == nil {
		return 0
	}
	select {
	case code := <-done:
		return code
	case <-c.Done():
		return cf.fail(stderr, c.Err())
	case <-ctx.Done():
		if *timeout > 0 && ctx.Err() == context.DeadlineExceeded {
			fmt.Fprintln(stderr, "Timed out")
			return exitTimeout
		}
		return 0 // interrupted
	}
}

func filteredOut(filters []string, name string) bool {
	for _, f := range filters {
		if topic.Match(f, name) {
			return true
		}
	}
	return false
}

// printer writes messages in mosquitto_sub's output formats.
type printer struct {
	w       io.Writer
	format  string
	eol     bool
	verbose bool // -v: an empty payload prints as (null)
	buf     bytes.Buffer
}

func (p *printer) print(m *client.Message, clientID string) error {
	p.buf.Reset()
	b := &p.buf
	f := p.format
	for i := 0; i < len(f); i++ {
		ch := f[i]
		if (ch != '%' && ch != '\\') || i+1 == len(f) {
			b.WriteByte(ch)
			continue
		}
		i++
		if ch == '\\' {
			switch f[i] {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case '\\':
				b.WriteByte('\\')
			case '0':
				b.WriteByte(0)
			default:
				b.WriteByte('\\')
				b.WriteByte(f[i])
			}
			continue
		}
		if err := p.verb(f[i], m, clientID); err != nil {
			return err
		}
	}
	if p.eol {
		b.WriteByte('\n')
	}
	_, err := p.w.Write(b.Bytes())
	return err
}

func (p *printer) verb(v byte, m *client.Message, clientID string) error {
	b := &p.buf
	pr := &m.Properties
	switch v {
	case '%':
		b.WriteByte('%')
	case 't':
		b.WriteString(m.Topic)
	case 'p':
		if len(m.Payload) == 0 && p.verbose {
			b.WriteString("(null)")
		}
		b.Write(m.Payload)
	case 'q':
		b.WriteString(strconv.Itoa(int(m.QoS)))
	case 'r':
		b.WriteString(strconv.Itoa(b2i(m.Retain)))
	case 'l':
		b.WriteString(strconv.Itoa(len(m.Payload)))
	case 'm':
		b.WriteString(strconv.Itoa(int(m.PacketID)))
	case 'c':
		b.WriteString(clientID)
	case 'x':
		b.WriteString(hex.EncodeToString(m.Payload))
	case 'X':
		b.WriteString(strings.ToUpper(hex.EncodeToString(m.Payload)))
	case 'I':
		b.WriteString(time.Now().Format("2006-01-02T15:04:05-0700"))
	case 'U':
		now := time.Now()
		fmt.Fprintf(b, "%d.%09d", now.Unix(), now.Nanosecond())
	case 'C':
		b.WriteString(pr.ContentType)
	case 'R':
		b.WriteString(pr.ResponseTopic)
	case 'D':
		b.Write(pr.CorrelationData)
	case 'E':
		if pr.Has(packet.PropMessageExpiry) {
			b.WriteString(strconv.FormatUint(uint64(pr.MessageExpiry), 10))
		}
	case 'F':
		if pr.Has(packet.PropPayloadFormat) {
			b.WriteString(strconv.Itoa(int(pr.PayloadFormat)))
		}
	case 'P':
		for i, u := range pr.User {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(u.Key + ":" + u.Value)
		}
	case 'S':
		for i, id := range pr.SubscriptionIDs {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatUint(uint64(id), 10))
		}
	case 'j', 'J':
		return p.json(m, v == 'J')
	default:
		b.WriteByte('%')
		b.WriteByte(v)
	}
	return nil
}

// json writes mosquitto_sub's %j / %J object, fields in its order.
func (p *printer) json(m *client.Message, withProps bool) error {
	b := &p.buf
	str := func(s string) {
		var sb bytes.Buffer
		enc := json.NewEncoder(&sb)
		enc.SetEscapeHTML(false)
		enc.Encode(s)
		b.Write(bytes.TrimRight(sb.Bytes(), "\n"))
	}
	b.WriteString(`{"tst":`)
	str(time.Now().UTC().Format("2006-01-02T15:04:05.000000Z+0000"))
	b.WriteString(`,"topic":`)
	str(m.Topic)
	fmt.Fprintf(b, `,"qos":%d,"retain":%d,"payloadlen":%d`, m.QoS, b2i(m.Retain), len(m.Payload))
	if m.PacketID != 0 {
		fmt.Fprintf(b, `,"mid":%d`, m.PacketID)
	}
	p.jsonProps(&m.Properties, str)
	if withProps {
		if !json.Valid(m.Payload) {
			return fmt.Errorf("Message payload is not valid JSON on topic %s.", m.Topic)
		}
		b.WriteString(`,"payload":`)
		b.Write(m.Payload)
		b.WriteByte('}')
		return nil
	}
	b.WriteString(`,"payload":`)
	// Invalid UTF-8 becomes U+FFFD; mosquitto_sub cuts the payload at
	// the first NUL instead.
	str(string(m.Payload))
	b.WriteByte('}')
	return nil
}

// jsonProps writes the MQTT 5 properties as mosquitto_sub does, in
// identifier order (the order Roost, like most senders, writes them in;
// mosquitto_sub prints them in wire order).
func (p *printer) jsonProps(pr *packet.Properties, str func(string)) {
	b := &p.buf
	var parts []func()
	if pr.Has(packet.PropPayloadFormat) {
		parts = append(parts, func() { fmt.Fprintf(b, `"payload-format-indicator":%d`, pr.PayloadFormat) })
	}
	if pr.Has(packet.PropMessageExpiry) {
		parts = append(parts, func() { fmt.Fprintf(b, `"message-expiry-interval":%d`, pr.MessageExpiry) })
	}
	if pr.Has(packet.PropContentType) {
		parts = append(parts, func() { b.WriteString(`"content-type":`); str(pr.ContentType) })
	}
	if pr.Has(packet.PropResponseTopic) {
		parts = append(parts, func() { b.WriteString(`"response-topic":`); str(pr.ResponseTopic) })
	}
	if pr.Has(packet.PropCorrelationData) {
		parts = append(parts, func() { b.WriteString(`"correlation-data":`); str(string(pr.CorrelationData)) })
	}
	if len(pr.User) > 0 {
		parts = append(parts, func() {
			b.WriteString(`"user-properties":{`)
			for i, u := range pr.User {
				if i > 0 {
					b.WriteByte(',')
				}
				str(u.Key)
				b.WriteByte(':')
				str(u.Value)
			}
			b.WriteByte('}')
		})
	}
	if len(parts) == 0 {
		return
	}
	b.WriteString(`,"properties":{`)
	for i, f := range parts {
		if i > 0 {
			b.WriteByte(',')
		}
		f()
	}
	b.WriteByte('}')
}
