package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/roost-mqtt/roost/client"
	"github.com/roost-mqtt/roost/packet"
)

const pubHelp = `Publishes one message (-m, -f, -n, -s) or one per line of stdin (-l) and
exits when every publish is complete (PUBACK/PUBCOMP for QoS 1/2). Flags are
those of mosquitto_pub; unlike it, the protocol defaults to MQTT 5 (-V 311
for 3.1.1). Exit status: 0 success, 1 connection, publish or usage error.`

// stdinReader is where -s and -l read; tests replace it.
var stdinReader io.Reader = os.Stdin

func runPub(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("pub", "", pubHelp, stderr)
	var cf connFlags
	cf.register(fs, false)
	var (
		message   string
		file      = fs.String("f", "", "send the contents of `file` as the message")
		null      = fs.Bool("n", false, "send a null (zero length) message")
		stdinAll  = fs.Bool("s", false, "read the message from stdin, the whole input as one message")
		stdinLine = fs.Bool("l", false, "read messages from stdin, one per line")
		retain    = fs.Bool("r", false, "retain the message")
		repeat    = fs.Int("repeat", 1, "publish the message `N` times (-m, -f, -n, -s)")
		delay     = fs.Float64("repeat-delay", 0, "wait `seconds` between repeated publishes")
	)
	mSet := false
	fs.Func("m", "message `payload` to send", func(s string) error { message, mSet = s, true; return nil })
	if code, ok := cf.parse(fs, args); !ok {
		return code
	}
	modes := 0
	for _, b := range []bool{mSet, *file != "", *null, *stdinAll, *stdinLine} {
		if b {
			modes++
		}
	}
	if cf.topic == "" || modes != 1 {
		fmt.Fprintln(stderr, "Error: Both topic and message must be supplied.")
		fmt.Fprintln(stderr, "Use 'roost pub -h' to see usage.")
		return 1
	}
	var payload []byte
	switch {
	case mSet:
		payload = []byte(message)
	case *file != "":
		b, err := os.ReadFile(*file)
		if err != nil {
			fmt.Fprintf(stderr, "Error: %v\n", err)
			return 1
		}
		payload = b
	case *stdinAll:
		b, err := io.ReadAll(stdinReader)
		if err != nil {
			fmt.Fprintf(stderr, "Error: reading stdin: %v\n", err)
			return 1
		}
		payload = b
	}
	c, code := cf.connect(ctx, stdout, stderr)
	if c == nil {
		return code
	}
	defer cf.disconnect(c)
	pub := func(p []byte) error {
		m := client.Message{Topic: cf.topic, Payload: p, QoS: packet.QoS(cf.qos), Retain: *retain, Properties: cf.props.publish}
		ack, err := c.Publish(ctx, m)
		if cf.debug {
			fmt.Fprintf(stdout, "Client %s published to '%s' (q%d, r%d, %d bytes): %v\n",
				c.ClientID(), cf.topic, cf.qos, b2i(*retain), len(p), ack.ReasonCode)
		}
		return err
	}
	if *stdinLine {
		sc := bufio.NewScanner(stdinReader)
		sc.Buffer(make([]byte, 64<<10), int(packet.MaxVarint))
		for sc.Scan() {
			if err := pub(sc.Bytes()); err != nil {
				return cf.fail(stderr, err)
			}
		}
		return 0
	}
	for i := range max(*repeat, 1) {
		if i > 0 && *delay > 0 {
			select {
			case <-time.After(time.Duration(*delay * float64(time.Second))):
			case <-ctx.Done():
				return 1
			}
		}
		if err := pub(payload); err != nil {
			return cf.fail(stderr, err)
		}
	}
	return 0
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// connFlags are the connection flags roost pub and roost sub share, named
// as in mosquitto_pub and mosquitto_sub.
type connFlags struct {
	host, url, user, pass, id, idPrefix, version string
	port, keepalive, qos                         int
	topic                                        string // pub's -t, or the -L path
	topics                                       []string
	debug, quiet, noClean, insecure              bool
	cafile, cert, key                            string
	willTopic, willPayload                       string
	willQoS                                      int
	willRetain                                   bool
	sessionExpiry                                int64
	props                                        dprops
	clientID                                     string
}

func (f *connFlags) register(fs *flag.FlagSet, sub bool) {
	fs.StringVar(&f.host, "h", "localhost", "`host` to connect to")
	fs.IntVar(&f.port, "p", 0, "network `port` (default 1883, 8883 with TLS)")
	fs.StringVar(&f.url, "L", "", "connect to `URL` mqtt(s)://[user[:password]@]host[:port]/topic (also ws://, wss://)")
	fs.Func("t", "MQTT `topic` (repeatable for sub)", func(s string) error {
		f.topic = s
		f.topics = append(f.topics, s)
		return nil
	})
	fs.IntVar(&f.qos, "q", 0, "`qos` 0, 1 or 2")
	fs.StringVar(&f.user, "u", "", "`username`")
	fs.StringVar(&f.pass, "P", "", "`password`")
	fs.StringVar(&f.id, "i", "", "client `id` (default: random)")
	fs.StringVar(&f.idPrefix, "I", "", "client id `prefix`, the process id appended")
	fs.IntVar(&f.keepalive, "k", 60, "keep alive in `seconds`")
	fs.StringVar(&f.version, "V", "5", "protocol `version`: 5 (mqttv5) or 311 (mqttv311)")
	fs.BoolVar(&f.debug, "d", false, "print debug messages")
	fs.BoolVar(&f.quiet, "quiet", false, "do not print error messages")
	fs.BoolVar(&f.noClean, "c", false, "disable clean session (keep the session on the server)")
	fs.Int64Var(&f.sessionExpiry, "x", -2, "MQTT 5 session expiry `seconds` (-1: never)")
	fs.StringVar(&f.cafile, "cafile", "", "trusted CA certificates `file` (enables TLS)")
	fs.StringVar(&f.cert, "cert", "", "client certificate `file`")
	fs.StringVar(&f.key, "key", "", "client private key `file`")
	fs.BoolVar(&f.insecure, "insecure", false, "do not verify the server certificate's host name")
	fs.StringVar(&f.willTopic, "will-topic", "", "will `topic`")
	fs.StringVar(&f.willPayload, "will-payload", "", "will `payload`")
	fs.IntVar(&f.willQoS, "will-qos", 0, "will `qos`")
	fs.BoolVar(&f.willRetain, "will-retain", false, "retain the will")
	fs.Func("D", "MQTT 5 property: -D `command identifier value`, e.g. -D publish user-property k v", func(string) error { return nil })
	fs.Func("property", "same as -D", func(string) error { return nil })
}

// parse parses args; -D takes three values (four for user-property),
// which the flag package cannot, so they are taken out first.
//
// -h names the host, as in mosquitto_pub; alone (as `roost help pub`
// passes it) it asks for help, like --help.
func (f *connFlags) parse(fs *flag.FlagSet, args []string) (int, bool) {
	if len(args) == 1 && args[0] == "-h" {
		fs.Usage()
		return 0, false
	}
	rest, err := f.props.extract(args)
	if err != nil {
		fmt.Fprintf(fs.Output(), "Error: %v\n", err)
		return 1, false
	}
	if code, ok := parseFlags(fs, rest); !ok {
		if code == 2 {
			code = 1 // as mosquitto_pub/sub
		}
		return code, false
	}
	if f.url != "" {
		u, err := url.Parse(f.url)
		if err != nil {
			fmt.Fprintf(fs.Output(), "Error: -L: %v\n", err)
			return 1, false
		}
		if t := strings.TrimPrefix(u.Path, "/"); t != "" && f.topic == "" {
			f.topic = t
			f.topics = append(f.topics, t)
		}
		if u.User != nil {
			f.user = u.User.Username()
			f.pass, _ = u.User.Password()
		}
	}
	if f.qos < 0 || f.qos > 2 || f.willQoS < 0 || f.willQoS > 2 {
		fmt.Fprintln(fs.Output(), "Error: Invalid QoS given.")
		return 1, false
	}
	return 0, true
}

// options turns the flags into client options.
func (f *connFlags) options() (client.Options, error) {
	o := client.Options{Username: f.user, Password: f.pass, ClientID: f.id, KeepSession: f.noClean,
		KeepAlive: time.Duration(f.keepalive) * time.Second, Reconnect: client.Backoff{Min: time.Second, Max: 30 * time.Second}}
	if f.idPrefix != "" && f.id == "" {
		o.ClientID = f.idPrefix + strconv.Itoa(os.Getpid())
	}
	switch f.version {
	case "5", "mqttv5":
		o.Version = packet.V5
	case "311", "mqttv311", "4":
		o.Version = packet.V311
	default:
		return o, fmt.Errorf("unsupported protocol version %q (5 or 311)", f.version)
	}
	if f.keepalive == 0 {
		o.KeepAlive = -1
	}
	switch {
	case f.sessionExpiry == -1:
		o.SessionExpiry = 0xFFFFFFFF * time.Second
	case f.sessionExpiry >= 0:
		o.SessionExpiry = time.Duration(f.sessionExpiry) * time.Second
	}
	o.ConnectProperties = f.props.connect
	tlsOn := f.cafile != "" || f.cert != "" || f.insecure
	server := f.url
	if server == "" {
		scheme, port := "mqtt", 1883
		if tlsOn {
			scheme, port = "mqtts", 8883
		}
		if f.port != 0 {
			port = f.port
		}
		server = scheme + "://" + net.JoinHostPort(f.host, strconv.Itoa(port))
	} else if u, err := url.Parse(server); err == nil {
		u.User, u.Path = nil, ""
		if u.Scheme == "ws" || u.Scheme == "wss" {
			u.Path = "/mqtt"
		}
		server = u.String()
		tlsOn = tlsOn || u.Scheme == "mqtts" || u.Scheme == "wss"
	}
	o.Servers = []string{server}
	if tlsOn {
		tc, err := f.tlsConfig()
		if err != nil {
			return o, err
		}
		o.TLSConfig = tc
	}
	if f.willTopic != "" {
		o.Will = &client.Message{Topic: f.willTopic, Payload: []byte(f.willPayload), QoS: packet.QoS(f.willQoS),
			Retain: f.willRetain, Properties: f.props.will}
	}
	return o, nil
}

func (f *connFlags) tlsConfig() (*tls.Config, error) {
	tc := &tls.Config{InsecureSkipVerify: f.insecure}
	if f.cafile != "" {
		pem, err := os.ReadFile(f.cafile)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cafile %s: no certificates", f.cafile)
		}
	}
	if f.cert != "" || f.key != "" {
		cert, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return nil, err
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// connect connects once, as mosquitto_pub does: a refused connection is
// an error, not a reason to retry. It returns nil and the exit code on
// failure.
func (f *connFlags) connect(ctx context.Context, stdout, stderr io.Writer) (*client.Client, int) {
	o, err := f.options()
	if err != nil {
		return nil, f.fail(stderr, err)
	}
	var c *client.Client
	if f.debug {
		o.OnStatus = func(s client.Status) { fmt.Fprintf(stdout, "Client %s %v\n", c.ClientID(), s) }
	}
	c, err = client.New(o)
	if err != nil {
		return nil, f.fail(stderr, err)
	}
	if err := c.Connect(ctx); err != nil {
		var re *client.ReasonError
		if errors.As(err, &re) {
			return nil, f.fail(stderr, fmt.Errorf("Connection error: %w", err))
		}
		return nil, f.fail(stderr, err)
	}
	return c, 0
}

func (f *connFlags) disconnect(c *client.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.Disconnect(ctx)
}

func (f *connFlags) fail(stderr io.Writer, err error) int {
	if !f.quiet {
		fmt.Fprintf(stderr, "Error: %v\n", err)
	}
	return 1
}

// dprops are the MQTT 5 properties given with -D, per packet.
type dprops struct {
	connect, publish, will packet.Properties
}

// extract removes every "-D command identifier value" (and --property)
// from args and records it.
func (d *dprops) extract(args []string) ([]string, error) {
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a != "-D" && a != "--property" && a != "-property" {
			rest = append(rest, a)
			if a == "--" {
				return append(rest, args[i+1:]...), nil
			}
			continue
		}
		if i+3 >= len(args) {
			return nil, errors.New("-D needs: command identifier value")
		}
		cmd, id, val := args[i+1], args[i+2], args[i+3]
		n := 3
		p, err := d.target(cmd)
		if err != nil {
			return nil, err
		}
		if id == "user-property" {
			if i+4 >= len(args) {
				return nil, errors.New("-D user-property needs a name and a value")
			}
			p.User = append(p.User, packet.UserProperty{Key: val, Value: args[i+4]})
			n = 4
		} else if err := setProp(p, id, val); err != nil {
			return nil, err
		}
		i += n
	}
	return rest, nil
}

func (d *dprops) target(cmd string) (*packet.Properties, error) {
	switch cmd {
	case "connect":
		return &d.connect, nil
	case "publish":
		return &d.publish, nil
	case "will":
		return &d.will, nil
	}
	return nil, fmt.Errorf("-D: unsupported command %q (connect, publish, will)", cmd)
}

// setProp sets one property by its mosquitto name.
func setProp(p *packet.Properties, id, val string) error {
	num := func(bits int) (uint64, error) {
		n, err := strconv.ParseUint(val, 10, bits)
		if err != nil {
			return 0, fmt.Errorf("-D %s: %w", id, err)
		}
		return n, nil
	}
	var err error
	var n uint64
	switch id {
	case "content-type":
		p.Set(packet.PropContentType)
		p.ContentType = val
	case "response-topic":
		p.Set(packet.PropResponseTopic)
		p.ResponseTopic = val
	case "correlation-data":
		p.Set(packet.PropCorrelationData)
		p.CorrelationData = []byte(val)
	case "payload-format-indicator":
		n, err = num(8)
		p.Set(packet.PropPayloadFormat)
		p.PayloadFormat = byte(n)
	case "message-expiry-interval":
		n, err = num(32)
		p.Set(packet.PropMessageExpiry)
		p.MessageExpiry = uint32(n)
	case "will-delay-interval":
		n, err = num(32)
		p.Set(packet.PropWillDelay)
		p.WillDelay = uint32(n)
	case "subscription-identifier":
		n, err = num(28)
		p.SubscriptionIDs = []uint32{uint32(n)}
	case "request-problem-information":
		n, err = num(8)
		p.Set(packet.PropRequestProblemInfo)
		p.RequestProblemInfo = byte(n)
	case "request-response-information":
		n, err = num(8)
		p.Set(packet.PropRequestResponseInfo)
		p.RequestResponseInfo = byte(n)
	default:
		return fmt.Errorf("-D: unsupported property %q", id)
	}
	return err
}
