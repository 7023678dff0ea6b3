// Command mksessions creates persistent MQTT 5 sessions on a broker, for
// the restart measurement of bench/cluster/sessions.sh: each client
// connects with Clean Start 0 and a Session Expiry Interval, subscribes to
// one filter of its own at QoS 1, and disconnects, so the session (its
// record and its subscription) stays on the broker. A bounded number of
// clients are connected at once (-parallel), so the count is not limited
// by the open-file limit of this process or of the broker.
//
//	mksessions --url mqtt://127.0.0.1:1883 -n 100000 [-prefix s] [-parallel 64]
//
// It stops at the first client that fails (after -retries attempts each,
// a refused CONNECT or SUBSCRIBE included) and exits 1, saying which.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mksessions:", err)
		os.Exit(1)
	}
}

type config struct {
	addr     string
	n        int
	prefix   string
	parallel int
	expiry   uint
	retries  int
	timeout  time.Duration
}

func run(args []string) error {
	fs := flag.NewFlagSet("mksessions", flag.ContinueOnError)
	u := fs.String("url", "mqtt://127.0.0.1:1883", "broker (mqtt://host:port)")
	c := config{}
	fs.IntVar(&c.n, "n", 1000, "sessions to create")
	fs.StringVar(&c.prefix, "prefix", "s", "client id prefix (ids are PREFIX0 ... PREFIX<n-1>)")
	fs.IntVar(&c.parallel, "parallel", 64, "clients connected at once")
	fs.UintVar(&c.expiry, "session-expiry", 3600, "Session Expiry Interval, seconds")
	fs.IntVar(&c.retries, "retries", 5, "attempts per client before giving up")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "bound of each attempt")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pu, err := url.Parse(*u)
	if err != nil || pu.Scheme != "mqtt" || pu.Port() == "" {
		return fmt.Errorf("--url %q: want mqtt://host:port", *u)
	}
	if c.n < 0 || c.parallel < 1 || c.retries < 1 || c.expiry == 0 || c.expiry > 0xFFFFFFFF {
		return errors.New("-n >= 0, -parallel >= 1, -retries >= 1 and 0 < -session-expiry <= 4294967295")
	}
	c.addr = pu.Host
	start := time.Now()
	done, err := create(context.Background(), c)
	el := time.Since(start)
	fmt.Printf("created %d persistent sessions in %.1f s (%.2f ms each, %d at a time)\n",
		done, el.Seconds(), el.Seconds()*1000/float64(max(done, 1)), c.parallel)
	return err
}

// create makes the sessions with c.parallel workers and returns how many
// were made; the first failure stops the others.
func create(ctx context.Context, c config) (int, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next, done atomic.Int64
	var wg sync.WaitGroup
	for range c.parallel {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= c.n {
					return
				}
				if err := session(ctx, c, fmt.Sprintf("%s%d", c.prefix, i)); err != nil {
					cancel(err)
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	return int(done.Load()), context.Cause(ctx)
}

// session creates one session, trying again after a failed attempt (a
// loaded broker may close a CONNECT without CONNACK for a moment).
func session(ctx context.Context, c config, id string) error {
	var err error
	for try := range c.retries {
		if try > 0 {
			select {
			case <-ctx.Done():
				return err
			case <-time.After(time.Duration(try) * 200 * time.Millisecond):
			}
		}
		if err = attempt(ctx, c, id); err == nil {
			return nil
		}
	}
	return fmt.Errorf("client %s: %w", id, err)
}

func attempt(ctx context.Context, c config, id string) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	cl := paho.NewClient(paho.ClientConfig{Conn: nc})
	exp := uint32(c.expiry)
	ca, err := cl.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: false, KeepAlive: 60,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &exp}})
	if err != nil {
		return fmt.Errorf("CONNECT: %w", err)
	}
	if ca.ReasonCode != 0 {
		return fmt.Errorf("CONNACK 0x%02X", ca.ReasonCode)
	}
	sa, err := cl.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "sessions/" + id, QoS: 1}}})
	if err != nil {
		return fmt.Errorf("SUBSCRIBE: %w", err)
	}
	if len(sa.Reasons) != 1 || sa.Reasons[0] >= 0x80 {
		return fmt.Errorf("SUBACK %v", sa.Reasons)
	}
	// DISCONNECT 0x00: the session stays (its expiry is from the CONNECT),
	// no will.
	return cl.Disconnect(&paho.Disconnect{ReasonCode: 0})
}
