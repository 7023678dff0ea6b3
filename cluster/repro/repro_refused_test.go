package repro_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/packet"
)

// TestReproResumedCopyKept: a session whose client resumed it on its old
// owner, after a claim back that the other node answered with "nothing to
// hand over", is still there for the client's next CONNECT elsewhere
// (test/jepsen TestClusterFull, 30 minutes, seed 42: g1m0's session lost
// at 1,636 s; bench/jepsen/RESULTS.md, "Session 19 (lead)" and "refused").
// There n3 handed g1m0's session over live to n1's claim (epoch 477) and
// kept its copy until n1 confirmed, at most liveConfirmTimeout (15 s).
// The client came back to n3 (epoch 478); n1, its move still waiting at
// the answer's bound, answered "nothing" (before the cut, which now says
// "read the stream" unless the adoption has begun), and n3 let the client
// resume that same copy, Session Present 1. The CONNACK waited
// for the partition streams and was refused ("store failed"), the client
// gone meanwhile. 15 s after the handover, its timer ended the copy: n3
// now owned the record with no session and no unread mark, and n2's claim
// (479) was told "nothing to hand over": Session Present 0.
//
// Here the session is on n1, offline, with QoS 1 and 2 messages queued
// (sent to a raw client that never acknowledges them, they stay
// inflight). n2 claims the id, and its move waits for a newer claim before
// its finish (finish-asked), then for the node's end once its adoption
// has begun (seal-late): a release request is then answered, after the
// answer's last bound, without the session (awaitIn). The client comes
// back to n1 and resumes its copy there, then leaves; n2 is killed, so
// nothing confirms n1's handover. Past the handover's bound, the client
// connects to n3: Session Present 1, every queued message, and the
// subscriptions.
func TestReproResumedCopyKept(t *testing.T) {
	t.Parallel() // see harness.Main
	const prefix = "rck"
	id := prefix + "-sub"
	// No adoption by the janitor: the session moves by claims only.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "finish-asked=" + id + "@n2,seal-late=" + id + "@n2", Config: "cluster:\n  adopt_after: 60s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	sub, pub := harness.PersistentPair(t, n1, n3, prefix, harness.QueuedExpiry)
	sub.Disconnect(&paho.Disconnect{}) // the session stays on n1, offline
	left := "client_id=" + id + ` reason=`
	tc.WaitLog(n1, left, 1, harness.Wait)
	want := harness.PublishOwedQoS(t, n3, prefix+"-pub", &pub, prefix+"/q1", prefix+"1", 10, 1)
	want = append(want, harness.PublishOwedQoS(t, n3, prefix+"-pub", &pub, prefix+"/q2", prefix+"2", 10, 2)...)

	// n2 claims the id; n1 hands the session over live, its copy kept
	// for the move, and n2's move waits for a newer claim.
	claimOn(t, tc, n2, id, harness.QueuedExpiry)
	tc.WaitLog(n2, `"cluster: test fault: the move's finish waits for a newer claim" node=n2 client_id=`+id, 1, 60*time.Second)

	// The client comes back to n1.
	nc, ack := rawResume(t, n1, id, harness.QueuedExpiry, 60*time.Second)
	logs := func() string {
		return fmt.Sprintf("n1:\n%s\nn2:\n%s\nn3:\n%s", harness.GrepLog(n1, "client_id="+id), harness.GrepLog(n2, "client_id="+id), harness.GrepLog(n3, "client_id="+id))
	}
	// The path: n2's adoption, begun, outlasted the answer's last bound.
	// Answered "nothing to hand over" then, n1 resumed its copy here
	// (resumeHere); since branch lateadopt that answer is a cut, and n1
	// reads the session from the stream: either way the client must get
	// its session here and, below, on n3.
	// Missed (the machine's timing), the client is owed its session all
	// the same: every check below runs, and only then does a miss skip.
	missed := harness.CountLog(n2, `"cluster: a newer claim asked for a session still being adopted here;`) == 0 ||
		harness.CountLog(n1, `"cluster: previous owner did not confirm the takeover" node=n1 client_id=`+id) > 0
	if !ack.SessionPresent {
		t.Fatalf("%s resumed on n1 without its session (Session Present 0); %s", id, logs())
	}
	nc.Close() // the client leaves: in the run, its CONNACK was refused
	tc.WaitLog(n1, left, 2, harness.Wait)
	tc.Kill(n2, syscall.SIGKILL) // its move never adopts, nothing confirms n1's handover
	// n1's handover to n2's claim is given up liveConfirmTimeout (15 s)
	// after the move's first barrier, before the claim back. Main's code
	// ends the copy then, and logs it; past that, the window is over.
	ended := `"session ended: its client id is owned by another node" client_id=` + id
	for deadline := time.Now().Add(20 * time.Second); harness.CountLog(n1, ended) == 0 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}

	r := <-connectKeeping(t, n3, id, harness.QueuedExpiry)
	if r.c == nil {
		t.Fatalf("%s not connected on n3 within 60 s; %s", id, logs())
	}
	if !r.present {
		t.Errorf("%s started afresh on n3 (Session Present 0); %s", id, logs())
	}
	got, lost := harness.ReceiveAll(r.c, want, 30*time.Second)
	if len(lost) > 0 {
		t.Errorf("%d of %d queued messages lost: %v", len(lost), len(want), lost)
	}
	// Its subscriptions are the session's still.
	after := harness.PublishOwedQoS(t, n3, prefix+"-pub", &pub, prefix+"/q1", prefix+"after1", 1, 1)
	after = append(after, harness.PublishOwedQoS(t, n3, prefix+"-pub", &pub, prefix+"/q2", prefix+"after2", 1, 2)...)
	more, lost := harness.ReceiveAll(r.c, after, 30*time.Second)
	if len(lost) > 0 {
		t.Errorf("published after the resume, not received: %v (the session's subscriptions gone)", lost)
	}
	drainFor(r.c, time.Second, func(p string) { got[p]++ })
	for m, n := range more {
		got[m] += n
	}
	for m, n := range got {
		if strings.HasPrefix(m, prefix+"2") && n > 1 {
			t.Errorf("QoS 2 message %s delivered %d times", m, n)
		}
	}
	if missed && !t.Failed() {
		t.Skipf("n1's claim back was not answered without the session: the test missed the path it is about; %s", logs())
	}
	if missed {
		t.Logf("the test also missed the path it is about: n1's claim back was not answered without the session")
	}
}

// rawResume connects id (Clean Start 0, Session Expiry expiry) to nd
// over a bare socket until a CONNACK 0x00 comes, within bound, and returns
// the connection and the CONNACK. The caller reads nothing more: what the
// session sends stays unacknowledged (inflight).
func rawResume(t *testing.T, nd *harness.Node, id string, expiry uint32, bound time.Duration) (net.Conn, *packet.Connack) {
	t.Helper()
	c := &packet.Connect{ProtocolVersion: packet.V5, ClientID: id, KeepAlive: 30}
	c.Properties.SessionExpiry = expiry
	c.Properties.Set(packet.PropSessionExpiry)
	b, err := c.Encode(nil, packet.V5)
	if err != nil {
		t.Fatal(err)
	}
	var last error
	for deadline := time.Now().Add(bound); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		nc, err := net.DialTimeout("tcp", nd.MQTT, harness.Wait)
		if err != nil {
			last = err
			continue
		}
		t.Cleanup(func() { nc.Close() })
		// A claim's bound (forward_timeout) with a release wait and the
		// store's.
		nc.SetDeadline(time.Now().Add(20 * time.Second))
		ack, err := readConnack(nc, b)
		if err == nil && ack.ReasonCode == 0 {
			nc.SetDeadline(time.Time{})
			return nc, ack
		}
		if err == nil {
			err = fmt.Errorf("CONNACK 0x%02X", ack.ReasonCode)
		}
		last = err
		nc.Close()
	}
	t.Fatalf("%s: no CONNACK 0x00 from %s within %v (last: %v); %s:\n%s", id, nd.Name, bound, last, nd.Name, harness.GrepLog(nd, "client_id="+id))
	return nil, nil
}

// readConnack writes connect to nc and reads the CONNACK.
func readConnack(nc net.Conn, connect []byte) (*packet.Connack, error) {
	if _, err := nc.Write(connect); err != nil {
		return nil, err
	}
	r := bufio.NewReader(nc)
	h, err := packet.ReadFixedHeader(r)
	if err != nil {
		return nil, err
	}
	body := make([]byte, h.Remaining)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	p, err := packet.Decode(h, body, packet.V5)
	if err != nil {
		return nil, err
	}
	ack, ok := p.(*packet.Connack)
	if !ok {
		return nil, fmt.Errorf("%T before the CONNACK", p)
	}
	return ack, nil
}
