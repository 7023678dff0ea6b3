package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// storeChildEnv, when set to "dir addr", makes TestFileStoreChild act as
// the process that TestFileStoreSurvivesKill kills.
const storeChildEnv = "ROOST_CLIENT_STORE_CHILD"

// TestFileStoreChild is not a test by itself: run by
// TestFileStoreSurvivesKill, it publishes six messages with a FileStore
// and waits to be killed.
func TestFileStoreChild(t *testing.T) {
	arg := os.Getenv(storeChildEnv)
	if arg == "" {
		t.Skip("helper process for TestFileStoreSurvivesKill")
	}
	dir, addr, _ := strings.Cut(arg, " ")
	st, err := NewFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Options{Servers: []string{addr}, ClientID: "fs-kill", KeepSession: true, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	for i := range 6 {
		go c.Publish(context.Background(), Message{Topic: "kill/" + strconv.Itoa(i), QoS: packet.QoS(2 - i%2)})
		eventually(t, 5*time.Second, func() error {
			if st := c.Stats(); st.Queued+st.Inflight <= i {
				return errors.New("not queued yet")
			}
			return nil
		})
	}
	select {} // until SIGKILL
}

// A process using a FileStore is killed (SIGKILL) with QoS 1 and 2
// publishes in every state: sent and unacknowledged, PUBREC'd (PUBREL
// pending), and never sent for want of quota. A new Client on the same
// directory resends them on connect in their original order: PUBREL, and
// PUBLISH with DUP, under their original packet identifiers, then the
// unsent ones; once acknowledged they leave the store.
func TestFileStoreSurvivesKill(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := newFakeServer(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestFileStoreChild$")
	cmd.Env = append(os.Environ(), storeChildEnv+"="+dir+" "+srv.URL())
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
		if t.Failed() {
			t.Logf("child output:\n%s", out.String())
		}
	})

	// Connection 1, Receive Maximum 4: four PUBLISHes; the first QoS 2
	// one gets PUBREC and its PUBREL comes back.
	conn1, _ := srv.accept(connackRecvMax(4, false))
	var sent []uint16
	var pubrecd, released uint16
	qos := map[uint16]packet.QoS{}
	for len(sent) < 4 || released == 0 {
		switch p := conn1.Next(10 * time.Second).(type) {
		case *packet.Publish:
			sent = append(sent, p.PacketID)
			qos[p.PacketID] = p.QoS
			// Only the first: the next QoS 2 PUBLISH may come before
			// its PUBREL (on a busy machine it did, and two were
			// released).
			if p.QoS == 2 && pubrecd == 0 {
				pubrecd = p.PacketID
				conn1.Send(&packet.Pubrec{PacketID: p.PacketID})
			}
		case *packet.Pubrel:
			released = p.PacketID
		default:
			t.Fatalf("connection 1: unexpected %v", p.Type())
		}
	}
	// The store has all six, the PUBREC'd one marked released.
	st, err := NewFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() error {
		recs, err := st.Load()
		if err != nil {
			return err
		}
		rel := 0
		for _, r := range recs {
			if r.Released {
				rel++
			}
		}
		if len(recs) != 6 || rel != 1 {
			return fmt.Errorf("%d records, %d released", len(recs), rel)
		}
		return nil
	})
	cmd.Process.Kill()
	cmd.Wait()
	killed = true
	conn1.NC.Close()

	// The next process.
	c := newClientNoWait(t, Options{Servers: []string{srv.URL()}, ClientID: "fs-kill", KeepSession: true, Store: st})
	conn2, cp := srv.accept(connackRecvMax(10, true))
	if cp.ClientID != "fs-kill" || cp.CleanStart {
		t.Fatalf("CONNECT client id %q clean start %v", cp.ClientID, cp.CleanStart)
	}
	var order []string
	recd := map[uint16]bool{} // PUBREC'd on this connection: their PUBREL is not a resend
	for len(order) < 6 {
		switch p := conn2.Next(10 * time.Second).(type) {
		case *packet.Pubrel:
			if !recd[p.PacketID] {
				order = append(order, fmt.Sprintf("PUBREL %d", p.PacketID))
			}
			conn2.Send(&packet.Pubcomp{PacketID: p.PacketID})
		case *packet.Publish:
			order = append(order, fmt.Sprintf("PUBLISH %d dup=%v %s", p.PacketID, p.Dup, p.Topic))
			if slices.Contains(sent, p.PacketID) && qos[p.PacketID] != p.QoS {
				t.Errorf("PUBLISH %d: QoS %d, was %d", p.PacketID, p.QoS, qos[p.PacketID])
			}
			if p.QoS == 1 {
				conn2.Send(&packet.Puback{PacketID: p.PacketID})
			} else {
				recd[p.PacketID] = true
				conn2.Send(&packet.Pubrec{PacketID: p.PacketID})
			}
		default:
			t.Fatalf("connection 2: unexpected %v", p.Type())
		}
	}
	// Expected: the four sent on connection 1 in their order (the released
	// one as PUBREL), then kill/4 and kill/5, first sent now.
	var want []string
	for i, id := range sent {
		if id == released {
			want = append(want, fmt.Sprintf("PUBREL %d", id))
		} else {
			want = append(want, fmt.Sprintf("PUBLISH %d dup=true kill/%d", id, i))
		}
	}
	got := strings.Join(order, "\n")
	for i, w := range want {
		if !strings.HasPrefix(order[i], w) {
			t.Fatalf("resent:\n%s\nwant first:\n%s", got, strings.Join(want, "\n"))
		}
	}
	for i, topic := range []string{"kill/4", "kill/5"} {
		if o := order[4+i]; !strings.HasPrefix(o, "PUBLISH") || !strings.HasSuffix(o, "dup=false "+topic) {
			t.Errorf("then %q, want a first PUBLISH of %s", o, topic)
		}
	}
	// PUBRELs of the QoS 2 ones just PUBREC'd, then PUBCOMP.
	go func() {
		for {
			p, err := conn2.Read(5 * time.Second)
			if err != nil {
				return
			}
			if rel, ok := p.(*packet.Pubrel); ok {
				conn2.Send(&packet.Pubcomp{PacketID: rel.PacketID})
			}
		}
	}()
	eventually(t, 10*time.Second, func() error {
		recs, err := st.Load()
		if err != nil {
			return err
		}
		if len(recs) != 0 || c.Stats().Inflight != 0 {
			return fmt.Errorf("%d records left, %+v", len(recs), c.Stats())
		}
		return nil
	})
}

// newClientNoWait starts a client without waiting for its connection (the
// test plays the server), disconnected at cleanup.
func newClientNoWait(t *testing.T, o Options) *Client {
	t.Helper()
	o.Reconnect = fastReconnect
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.Disconnect(ctx)
	})
	return c
}
