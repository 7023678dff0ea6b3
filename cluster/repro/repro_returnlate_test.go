package repro_test

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproReturnLateOp: test/jepsen TestClusterFull seed 41 (session 21;
// bench/jepsen/RESULTS.md, "ps41" and "ps41fix"). n3 was paused with ps3's
// session; n2 claimed the id meanwhile (ps3's CONNECT there), its read of
// the session from the stream failed, and no op of that claim was
// written; publishers held ps3's messages for n3 and for n2. Back from the
// pause, n3 journalled the DISCONNECT queued in its socket before it
// learnt of the claim: an op at its old epoch, made after every message
// held meanwhile and before its follower had read them, and the record's
// last op. n2's next claim read the held subjects from that op on: 29
// acknowledged messages lost.
//
// Here: rl-sub on n3, n3 paused (SIGSTOP) and dropped by the others;
// the client's DISCONNECT waits in n3's socket; messages are held for n3;
// rl-sub's CONNECT on n2 claims the id and cannot read the session
// (read-late: n2's reads of it fail while n2 holds for a dropped node);
// more messages are held; n3 resumes and journals the disconnect; the
// client resumes on n2. It must find its session and every acknowledged
// message, QoS 2 ones once.
func TestReproReturnLateOp(t *testing.T) {
	t.Parallel() // see harness.Main
	const prefix, id = "rl", "rl-sub"
	const expiry = harness.QueuedExpiry
	cfg := filepath.Join(t.TempDir(), "roost.yaml")
	// Nobody adopts n3's session while it is paused: only the claim on
	// n2 takes it.
	harness.WriteAtomic(t, cfg, []byte("cluster:\n  adopt_after: 60s\n"), 0o644)
	tc := harness.StartClusterFault(t, 3, "read-late="+id+"@n2", "--config", cfg)
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	sub, pub := harness.PersistentPair(t, n3, n1, prefix, expiry)
	// A quiet while before the pause: the session's last op before it
	// (the probes' deliveries) is older than n3's last heartbeat (one a
	// second), so where the claim's read below began says whether it
	// counted n3's op made after the pause.
	time.Sleep(3 * time.Second)
	paused := time.Now()
	tc.Kill(n3, syscall.SIGSTOP)
	// Written into n3's socket; n3 reads it when it runs again.
	sub.Disconnect(&paho.Disconnect{})
	harness.Eventually(t, harness.PartitionBound, func() error {
		if !harness.GoneFrom(n1, n3) || !harness.GoneFrom(n2, n3) {
			return fmt.Errorf("n3 not dropped by n1 and n2 yet")
		}
		return nil
	})
	var owed []string
	owe := func(batch string) {
		owed = append(owed, harness.PublishOwedQoS(t, n1, prefix+"-pub", &pub, prefix+"/q1", batch+"a", 5, 1)...)
		owed = append(owed, harness.PublishOwedQoS(t, n1, prefix+"-pub", &pub, prefix+"/q2", batch+"b", 5, 2)...)
	}
	owe("h") // held for n3

	// The claim on n2: the record names n2, n3 does not answer, the
	// read fails, no CONNACK. Tried again, as a client does, while the
	// owner records elect a leader (n3 may have led them).
	claimed := `"client id claimed from another node" node=n2 client_id=` + id + " previous=n3"
	for deadline := time.Now().Add(harness.PartitionBound); harness.CountLog(n2, claimed) == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("n2 did not claim %s from n3 within %v\nn2:\n%s", id, harness.PartitionBound, harness.GrepLog(n2, id))
		}
		c, ack, err := harness.TryConnect(t, n2, &paho.Connect{ClientID: id, CleanStart: false, KeepAlive: 30,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: ptr(uint32(expiry))}})
		if err == nil {
			c.Disconnect(&paho.Disconnect{})
			t.Fatalf("%s connected on n2 while n3 was paused (CONNACK 0x%02X, session present %v): the read-late fault did not hold", id, ack.ReasonCode, ack.SessionPresent)
		}
	}
	owe("c") // held after the claim that wrote no op

	tc.Kill(n3, syscall.SIGCONT)
	// n3 reads the DISCONNECT and learns of the claim (either order).
	tc.WaitLog(n3, `client_id=`+id+` reason="client disconnected normally"`, 1, harness.PartitionBound)
	tc.WaitLog(n3, `node=n3 client_id=`+id+` owner=n2`, 1, harness.PartitionBound)
	// n3 sends the op of the disconnect as soon as it runs, often on
	// routes the others have not taken back yet: unacknowledged, it goes
	// again after forward_timeout (5 s). The claim below reads the
	// stream after that resend's round (or the bound, if the first send
	// was taken).
	for end := time.Now().Add(8 * time.Second); time.Now().Before(end) && harness.CountLog(n3, `"cluster: session ops not replicated yet; retrying" node=n3`) == 0; {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)

	back := harness.Resume(t, n2, id, expiry, 60*time.Second)
	got, lost := harness.ReceiveAll(back, owed, 30*time.Second)
	// A QoS 2 message sent again comes right behind the others.
	extra, _ := harness.ReceiveAll(back, []string{"none"}, 2*time.Second)
	for p, k := range extra {
		got[p] += k
	}
	since := readSince(n2, id, "n3")
	t.Logf("%d acknowledged, %d lost; n2's read of n3's held subject began at %s (n3 paused at %s)",
		len(owed), len(lost), since.Format(stamp), paused.UTC().Format(stamp))
	var twice []string
	for p, k := range got {
		if k > 1 && strings.Contains(p, "b-") {
			twice = append(twice, fmt.Sprintf("%s %d times", p, k))
		}
	}
	if len(lost) > 0 || len(twice) > 0 {
		t.Fatalf("%s lost %d of %d acknowledged messages %v, QoS 2 more than once %v\nn2:\n%s\nn3:\n%s", id, len(lost), len(owed), lost, twice,
			harness.GrepLog(n2, id), harness.GrepLog(n3, id, "silence", "did not run", "replicated", "partition stream"))
	}
	// The path: the read began at n3's op made after the pause (as
	// counted: by its time, or by n3's last heartbeat before the pause),
	// not at the session's last op before it (n3's op not in the stream
	// yet when n2 read it).
	if since.Before(paused.Add(-1500 * time.Millisecond)) {
		t.Skipf("n2 read n3's held subject from %s, before n3's last heartbeat: n3's op made after the pause was not read; the test missed its path\nn2:\n%s\nn3:\n%s",
			since.Format(stamp), harness.GrepLog(n2, id), harness.GrepLog(n3, id, "silence", "did not run", "replicated", "partition stream"))
	}
}

const stamp = "15:04:05.000"

func ptr[T any](v T) *T { return &v }

// readSince returns where nd's last read ahead of peer's held subject for
// id began (its debug log); zero if it did not read it.
func readSince(nd *harness.Node, id, peer string) time.Time {
	re := regexp.MustCompile(`read ahead for a session taken from the stream" node=\S+ client_id=` + regexp.QuoteMeta(id) +
		` peer=` + peer + ` since=(\S+)`)
	m := re.FindAllStringSubmatch(harness.GrepLog(nd, "read ahead for a session taken from the stream"), -1)
	if len(m) == 0 {
		return time.Time{}
	}
	at, _ := time.Parse(time.RFC3339Nano, m[len(m)-1][1])
	return at
}
