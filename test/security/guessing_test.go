package security

import (
	"fmt"
	"net"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/auth"
	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// A password guesser spreading its attempts on one username over many
// addresses is slowed down: after five failures every attempt on that
// username is held before its password is checked, and beyond four held
// attempts the rest are refused unchecked (0x9F). Other usernames, from
// the same addresses, are not slowed.
func TestPasswordGuessingManyAddresses(t *testing.T) {
	t.Parallel()
	// mosquitto's old single-round SHA-512 entries: a check costs
	// microseconds even under -race, so the timings below are the
	// throttle's alone.
	bin := need(t, "mosquitto_passwd")
	file := writeFile(t, "passwd", "")
	for _, u := range []string{"alice", "bob"} {
		if out, err := exec.Command(bin, "-H", "sha512", "-b", file, u, "pw-"+u).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
		}
	}
	pw, err := auth.LoadPasswordFile(file)
	if err != nil {
		t.Fatal(err)
	}
	addr := start(t, broker.Options{Authenticator: &auth.Authenticator{Passwords: pw}})

	attempt := func(src int, user, pass string) (packet.ReasonCode, time.Duration) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(src))}}
		nc, err := d.Dial("tcp", addr)
		if err != nil {
			t.Error(err)
			return 0xFF, 0
		}
		defer nc.Close()
		c := &mqtttest.Client{T: t, NC: nc, R: packet.NewReader(nc, 1<<16), V: packet.V5}
		start := time.Now()
		c.Send(&packet.Connect{ProtocolVersion: packet.V5, ClientID: fmt.Sprint("g", src), CleanStart: true,
			UsernameFlag: true, Username: user, PasswordFlag: true, Password: []byte(pass)})
		p, err := c.Read(15 * time.Second)
		if err != nil {
			t.Errorf("attempt from .%d: %v", src, err)
			return 0xFF, 0
		}
		return p.(*packet.Connack).ReasonCode, time.Since(start)
	}

	// Five wrong guesses from five addresses: answered at once.
	for i := range 5 {
		if rc, d := attempt(10+i, "alice", fmt.Sprint("guess", i)); rc != packet.BadUserNameOrPassword || d > time.Second {
			t.Fatalf("guess %d: 0x%02X after %v", i+1, byte(rc), d)
		}
	}
	// Twelve more at once, each from a new address: four are held (and
	// then refused as wrong), the other eight refused unchecked.
	type res struct {
		rc packet.ReasonCode
		d  time.Duration
	}
	results := make(chan res, 12)
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rc, d := attempt(20+i, "alice", fmt.Sprint("burst", i))
			results <- res{rc, d}
		}()
	}
	// Meanwhile bob, from one of the guessing addresses, gets in at once.
	if rc, d := attempt(10, "bob", "pw-bob"); rc != 0 || d > time.Second {
		t.Errorf("bob: 0x%02X after %v, want an immediate success", byte(rc), d)
	}
	wg.Wait()
	close(results)
	held, unchecked := 0, 0
	for r := range results {
		switch {
		case r.rc == packet.BadUserNameOrPassword && r.d >= 900*time.Millisecond:
			held++
		case r.rc == packet.ConnectionRateExceeded && r.d < time.Second:
			unchecked++
		default:
			t.Errorf("attempt answered 0x%02X after %v", byte(r.rc), r.d)
		}
	}
	if held != 4 || unchecked != 8 {
		t.Errorf("%d attempts held and refused, %d refused unchecked; want 4 and 8", held, unchecked)
	}
}
