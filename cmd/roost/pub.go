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
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/roost-mqtt/roost/client"
	"github.com/roost-mqtt/roost/packet"
)

const pubHelp = `Publishes one message (-m, -f, -n, -s) or one per line of stdin (-l) and
exits when every publish is complete (PUBACK/PUBCOMP for QoS 1/2). Flags are
those of mosquitto_pub; unlike it, the protocol defaults to MQTT 5 (-V 311
for 3.1.1). Exit status: 0 success; the CONNACK code when the broker
refuses the connection (5 "not authorised" for 3.1.1, 135 for MQTT 5),
as mosquitto_pub; 1 for any other connection, publish or usage error.`

func runPub(ctx context.Context, args []string, std stdio) int {
	stdout, stderr := std.out, std.err
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
		b, err := io.ReadAll(std.in)
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
		sc := bufio.NewScanner(std.in)
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
	capath, tlsVersion, tlsALPN                  string
	osCerts                                      bool
	willTopic, willPayload                       string
	willQoS                                      int
	willRetain                                   bool
	sessionExpiry                                int64
	props                                        dprops
	clientID                                     string
	proxy                                        string
	psk, pskIdentity                             string
	unix                                         string
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
	fs.StringVar(&f.capath, "capath", "", "`dir`ectory of trusted CA certificate files, PEM (enables TLS)")
	fs.BoolVar(&f.osCerts, "tls-use-os-certs", false, "trust the system's CA certificates as well as --cafile/--capath (enables TLS)")
	fs.StringVar(&f.tlsVersion, "tls-version", "", "lowest TLS `version`: tlsv1.3, tlsv1.2 (default) or tlsv1.1")
	fs.StringVar(&f.tlsALPN, "tls-alpn", "", "TLS ALPN `protocol` to offer (e.g. x-amzn-mqtt-ca)")
	fs.BoolVar(&f.insecure, "insecure", false, "do not check the server certificate's host name (its chain is still verified)")
	fs.StringVar(&f.willTopic, "will-topic", "", "will `topic`")
	fs.StringVar(&f.willPayload, "will-payload", "", "will `payload`")
	fs.IntVar(&f.willQoS, "will-qos", 0, "will `qos`")
	fs.BoolVar(&f.willRetain, "will-retain", false, "retain the will")
	fs.Func("D", "MQTT 5 property: -D `command identifier value` (repeatable), e.g. -D publish user-property k v,\n"+
		"-D publish message-expiry-interval 60, -D connect session-expiry-interval 3600,\n"+
		"-D subscribe subscription-identifier 5; commands connect, publish, will, subscribe, unsubscribe, disconnect",
		func(string) error { return nil })
	fs.Func("property", "same as -D", func(string) error { return nil })
	fs.StringVar(&f.proxy, "proxy", "", "connect through a SOCKS5 proxy: `URL` socks5h://[user[:password]@]host[:port]")
	fs.StringVar(&f.psk, "psk", "", "not supported: TLS-PSK (Go's TLS has no PSK cipher suites); use --cafile/--cert/--key")
	fs.StringVar(&f.pskIdentity, "psk-identity", "", "not supported, see --psk")
	fs.StringVar(&f.unix, "unix", "", "not supported: unix domain sockets")
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
	if err := f.unsupported(); err != nil {
		fmt.Fprintf(fs.Output(), "Error: %v\n", err)
		return 1, false
	}
	return 0, true
}

// unsupported rejects the mosquitto flags Roost's tools cannot honour,
// saying why, rather than connecting without what the user asked for.
func (f *connFlags) unsupported() error {
	switch {
	case f.psk != "" || f.pskIdentity != "":
		return errors.New("--psk/--psk-identity: TLS-PSK is not supported: Go's crypto/tls has no pre-shared-key " +
			"cipher suites. Use certificates instead: --cafile to verify the broker, --cert and --key to identify the client " +
			"(roost cert dev makes a test CA and certificates)")
	case f.unix != "":
		return errors.New("--unix: unix domain sockets are not supported; connect with -h and -p")
	}
	return nil
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
	if o.Version != packet.V5 && f.props.any() {
		return o, errors.New("-D: properties need MQTT 5, and -V selects 3.1.1")
	}
	if err := f.props.applyConnect(&o); err != nil {
		return o, err
	}
	if dp := f.props.disconnect; dp.Has(packet.PropSessionExpiry) && dp.SessionExpiry != 0 && o.SessionExpiry == 0 && !o.KeepSession && o.Version == packet.V5 {
		return o, errors.New("-D disconnect session-expiry-interval: the session expiry at connect is 0 and cannot be raised " +
			"at disconnect [MQTT-3.14.2-2]; set it with -x or -D connect session-expiry-interval")
	}
	if f.proxy != "" {
		d, err := newSOCKS5Dialer(f.proxy)
		if err != nil {
			return o, err
		}
		o.DialContext = d.DialContext
	}
	tlsOn := f.cafile != "" || f.capath != "" || f.osCerts || f.cert != "" || f.insecure
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
	tc := &tls.Config{}
	if f.insecure {
		// As mosquitto's --insecure: the certificate chain is still
		// verified, only its host name is not compared with -h.
		tc.InsecureSkipVerify = true
		tc.VerifyConnection = func(cs tls.ConnectionState) error { return verifyChain(cs, tc.RootCAs) }
	}
	roots, err := f.rootCAs()
	if err != nil {
		return nil, err
	}
	tc.RootCAs = roots
	switch f.tlsVersion {
	case "", "tlsv1.2":
		tc.MinVersion = tls.VersionTLS12
	case "tlsv1.3":
		tc.MinVersion = tls.VersionTLS13
	case "tlsv1.1":
		tc.MinVersion = tls.VersionTLS11
	default:
		return nil, fmt.Errorf("--tls-version %q: want tlsv1.3, tlsv1.2 or tlsv1.1", f.tlsVersion)
	}
	if f.tlsALPN != "" {
		tc.NextProtos = []string{f.tlsALPN}
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

// rootCAs is the CA pool from --cafile, --capath and --tls-use-os-certs;
// nil (the system's) when none is given.
func (f *connFlags) rootCAs() (*x509.CertPool, error) {
	if f.cafile == "" && f.capath == "" {
		return nil, nil
	}
	pool := x509.NewCertPool()
	if f.osCerts {
		sys, err := x509.SystemCertPool()
		if err != nil {
			return nil, fmt.Errorf("--tls-use-os-certs: %w", err)
		}
		pool = sys
	}
	var files []string
	if f.cafile != "" {
		files = append(files, f.cafile)
	}
	if f.capath != "" {
		ents, err := os.ReadDir(f.capath)
		if err != nil {
			return nil, fmt.Errorf("--capath: %w", err)
		}
		for _, e := range ents {
			if !e.IsDir() {
				files = append(files, filepath.Join(f.capath, e.Name()))
			}
		}
	}
	found := false
	for _, name := range files {
		pem, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		// capath may hold other files (c_rehash links, CRLs): only
		// --cafile must be certificates.
		ok := pool.AppendCertsFromPEM(pem)
		if !ok && name == f.cafile {
			return nil, fmt.Errorf("--cafile %s: no certificates", f.cafile)
		}
		found = found || ok
	}
	if !found {
		return nil, fmt.Errorf("--capath %s: no certificates", f.capath)
	}
	return pool, nil
}

// verifyChain verifies the server's certificate chain against roots (nil:
// the system's) without checking the host name.
func verifyChain(cs tls.ConnectionState, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tls: the server sent no certificate")
	}
	opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool()}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(opts)
	return err
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
		if errors.As(err, &re) && re.Op == "connect" {
			// mosquitto_pub/sub exit with the CONNACK code (5 for a 3.1.1
			// "not authorised", 135 for MQTT 5 "Not authorized"), which
			// scripts test for.
			if !f.quiet {
				fmt.Fprintf(stderr, "Connection error: %v\n", strings.TrimPrefix(re.Error(), "client: connect: "))
			}
			return nil, int(re.Code)
		}
		return nil, f.fail(stderr, err)
	}
	return c, 0
}

// disconnect sends DISCONNECT, with the -D disconnect properties on MQTT 5.
func (f *connFlags) disconnect(c *client.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if p := f.props.disconnect; !empty(&p) && f.v5() {
		if err := c.DisconnectWithProperties(ctx, p); err == nil {
			return
		}
	}
	c.Disconnect(ctx)
}

// v5 reports whether the flags select MQTT 5.
func (f *connFlags) v5() bool { return f.version == "5" || f.version == "mqttv5" }

func (f *connFlags) fail(stderr io.Writer, err error) int {
	if !f.quiet {
		fmt.Fprintf(stderr, "Error: %v\n", err)
	}
	return 1
}
