package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/roost-mqtt/roost/bridge"
	"github.com/roost-mqtt/roost/client"
	"github.com/roost-mqtt/roost/internal/config"
	"github.com/roost-mqtt/roost/packet"
)

const bridgeHelp = `Forward messages between two brokers until interrupted: a bridge for
quick jobs, without a configuration file. --from is the "local" side of the
topic rules and --to the "remote" one, so "out" goes from --from to --to.
Each --topic is a mosquitto topic line:

  pattern [[[out | in | both] qos] local-prefix remote-prefix]

  roost bridge --from mqtt://edge:1883 --to mqtts://cloud:8883 --to-cafile ca.pem \
    --topic 'sensors/# out 1 "" site17/' --topic 'cmd/# in 1 "" site17/'

Both sessions start clean: what is published while the bridge is not
running is not forwarded (run a bridge in roost serve for store and
forward, docs/bridges.md). Exit status: 0 when interrupted, 1 on a
connection or usage error.`

func runBridge(ctx context.Context, args []string, std stdio) int {
	stderr := std.err
	fs := newFlagSet("bridge", "", bridgeHelp, stderr)
	var (
		from     = fs.String("from", "", "`URL` of the first broker (mqtt://, mqtts://, ws://, wss://)")
		to       = fs.String("to", "", "`URL` of the second broker")
		version  = fs.String("V", "5", "protocol `version` toward --to: 5, 311 or 31")
		fromUser = fs.String("from-user", "", "`username` for --from")
		fromPass = fs.String("from-password", "", "`password` for --from")
		toUser   = fs.String("to-user", "", "`username` for --to")
		toPass   = fs.String("to-password", "", "`password` for --to")
		fromCA   = fs.String("from-cafile", "", "CA certificates `file` for a TLS --from")
		toCA     = fs.String("to-cafile", "", "CA certificates `file` for a TLS --to")
		id       = fs.String("i", "", "client `id` on --to (default: roost-bridge-PID); local. and it on --from")
		debug    = fs.Bool("d", false, "log connections and refusals")
		topics   []bridge.Rule
	)
	fs.Func("topic", "mosquitto topic `line` (repeatable)", func(s string) error {
		r, err := bridge.ParseTopicLine(s)
		if err == nil {
			topics = append(topics, r)
		}
		return err
	})
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *from == "" || *to == "" || len(topics) == 0 {
		fmt.Fprintln(stderr, "roost bridge: --from, --to and at least one --topic are required")
		return 2
	}
	v := packet.V5
	switch *version {
	case "5", "mqttv5":
	case "311", "mqttv311", "3.1.1":
		v = packet.V311
	case "31", "mqttv31", "3.1":
		v = packet.V31
	default:
		fmt.Fprintf(stderr, "roost bridge: -V %q: want 5, 311 or 31\n", *version)
		return 2
	}
	fromTLS, err := caConfig(*fromCA)
	if err == nil {
		var toTLS *tls.Config
		if toTLS, err = caConfig(*toCA); err == nil {
			err = bridgeUntil(ctx, std, *debug, client.Options{Servers: []string{*from}, TLSConfig: fromTLS, Username: *fromUser, Password: *fromPass},
				bridge.Config{Name: "cli", Addresses: []string{*to}, Version: v, ClientID: orDefault(*id, "roost-bridge-"+fmt.Sprint(os.Getpid())),
					CleanStart: true, LocalCleanStart: true, Username: *toUser, Password: *toPass, TLS: toTLS, Topics: topics,
					Backoff: client.Backoff{Min: time.Second, Max: 30 * time.Second}})
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "roost bridge: %v\n", err)
		return 1
	}
	return 0
}

func orDefault(s, def string) string {
	if s != "" {
		return s
	}
	return def
}

// caConfig returns a TLS config trusting the CAs in file; nil for "".
func caConfig(file string) (*tls.Config, error) {
	if file == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", file)
	}
	return &tls.Config{RootCAs: pool}, nil
}

// bridgeUntil runs the bridge until ctx ends. The --from side must accept
// the first connection: a typo in the URL is reported at once; --to may
// come later, the bridge reconnects.
func bridgeUntil(ctx context.Context, std stdio, debug bool, local client.Options, cfg bridge.Config) error {
	cfg.Logger = newLoggerFor(std.err, debug)
	b, err := bridge.Between(local, cfg)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	err = b.Start(sctx)
	if err == nil {
		<-ctx.Done()
	}
	cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer ccancel()
	if cerr := b.Close(cctx); cerr != nil {
		cfg.Logger.Warn("closing the bridge", "err", cerr)
	}
	return err
}

// newLoggerFor logs warnings, and with debug also connections.
func newLoggerFor(w io.Writer, debug bool) *slog.Logger {
	level := slog.LevelWarn
	if debug {
		level = slog.LevelInfo
	}
	return newLogger(w, config.Log{Level: level, Format: config.LogText})
}
