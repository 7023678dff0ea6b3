package repro_test

import (
	"fmt"
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
	const id = "rl-sub"
	r := startReturnLate(t, "rl", "read-late="+id+"@n2", "60s")
	r.owe("h") // held for n3

	// The claim on n2: the record names n2, n3 does not answer, the
	// read fails, no CONNACK. Tried again, as a client does, while the
	// owner records elect a leader (n3 may have led them).
	claimed := `"client id claimed from another node" node=n2 client_id=` + id + " previous=n3"
	for deadline := time.Now().Add(harness.PartitionBound); harness.CountLog(r.n2, claimed) == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("n2 did not claim %s from n3 within %v\nn2:\n%s", id, harness.PartitionBound, harness.GrepLog(r.n2, id))
		}
		c, ack, err := harness.TryConnect(t, r.n2, &paho.Connect{ClientID: id, CleanStart: false, KeepAlive: 30,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: ptr(uint32(harness.QueuedExpiry))}})
		if err == nil {
			c.Disconnect(&paho.Disconnect{})
			t.Fatalf("%s connected on n2 while n3 was paused (CONNACK 0x%02X, session present %v): the read-late fault did not hold", id, ack.ReasonCode, ack.SessionPresent)
		}
	}
	r.owe("c") // held after the claim that wrote no op

	r.resumeN3()
	// n3 learns of the claim (before or after it journals the disconnect).
	r.tc.WaitLog(r.n3, `node=n3 client_id=`+id+` owner=n2`, 1, harness.PartitionBound)
	r.awaitLateOp()
	r.check(r.n2)
}

// TestReproReturnLateOpKilled: the same late op on a node that kept the
// id. Nobody claims rl-k-sub while n3 is paused; back, n3 journals the
// DISCONNECT queued in its socket, and is killed before its follower
// applied what was held for it during the pause (held-late holds each
// held message back 60 s there, as a slow follower would). The client
// resumes on n2, whose claim reads the held subjects from the session's
// last op: from n3's op made after the pause, the messages held during it
// were read by nobody.
func TestReproReturnLateOpKilled(t *testing.T) {
	t.Parallel() // see harness.Main
	r := startReturnLate(t, "rk", "held-late=60s@n3", "60s")
	r.owe("h")
	r.resumeN3()
	r.awaitLateOp()
	r.tc.Kill(r.n3, syscall.SIGKILL)
	r.check(r.n2)
}

// TestReproReturnLateOpJanitor: as TestReproReturnLateOpKilled, but the
// client stays away and a survivor's janitor adopts the killed node's
// session (adopt_after 10 s), reading the held subjects from the
// session's last op as a claim does (readSessions).
func TestReproReturnLateOpJanitor(t *testing.T) {
	t.Parallel() // see harness.Main
	r := startReturnLate(t, "rj", "held-late=60s@n3", "10s")
	r.owe("h")
	r.resumeN3()
	r.awaitLateOp()
	r.tc.Kill(r.n3, syscall.SIGKILL)
	adopted := `"session of a silent node adopted" node=%s client_id=` + r.id
	var by *harness.Node
	harness.Eventually(t, 60*time.Second, func() error {
		for _, nd := range []*harness.Node{r.n1, r.n2} {
			if harness.CountLog(nd, fmt.Sprintf(adopted, nd.Name)) > 0 {
				by = nd
				return nil
			}
		}
		return fmt.Errorf("%s not adopted by a janitor yet", r.id)
	})
	r.check(by)
}

// returnLate is the scenario of the two tests above: prefix-sub's session
// on n3 with its DISCONNECT queued in n3's socket while n3 is paused and
// dropped, prefix-pub on n1.
type returnLate struct {
	t            *testing.T
	tc           *harness.Cluster
	n1, n2, n3   *harness.Node
	prefix, id   string
	pub          *harness.Client
	owed         []string
	paused, back time.Time
}

func startReturnLate(t *testing.T, prefix, fault, adoptAfter string) *returnLate {
	t.Helper()
	// Nobody adopts n3's session on their own while it is paused (the
	// pause is shorter than 10 s).
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: fault, Config: "cluster:\n  adopt_after: " + adoptAfter + "\n"})
	r := &returnLate{t: t, tc: tc, n1: tc.Nodes[0], n2: tc.Nodes[1], n3: tc.Nodes[2], prefix: prefix, id: prefix + "-sub"}
	var sub *harness.Client
	sub, r.pub = harness.PersistentPair(t, r.n3, r.n1, prefix, harness.QueuedExpiry)
	// A quiet while before the pause: the session's last op before it
	// (the probes' deliveries) is older than n3's last heartbeat (one a
	// second), so where the claim's read began says whether it counted
	// n3's op made after the pause.
	time.Sleep(3 * time.Second)
	r.paused = time.Now()
	tc.Kill(r.n3, syscall.SIGSTOP)
	// Written into n3's socket; n3 reads it when it runs again.
	sub.Disconnect(&paho.Disconnect{})
	harness.Eventually(t, harness.PartitionBound, func() error {
		if !harness.GoneFrom(r.n1, r.n3) || !harness.GoneFrom(r.n2, r.n3) {
			return fmt.Errorf("n3 not dropped by n1 and n2 yet")
		}
		return nil
	})
	return r
}

// owe publishes five QoS 1 and five QoS 2 messages (batch a and b) on n1,
// acknowledged.
func (r *returnLate) owe(batch string) {
	r.t.Helper()
	p := r.prefix
	r.owed = append(r.owed, harness.PublishOwedQoS(r.t, r.n1, p+"-pub", &r.pub, p+"/q1", batch+"a", 5, 1)...)
	r.owed = append(r.owed, harness.PublishOwedQoS(r.t, r.n1, p+"-pub", &r.pub, p+"/q2", batch+"b", 5, 2)...)
}

// resumeN3 lets n3 run again and waits until it read the DISCONNECT.
func (r *returnLate) resumeN3() {
	r.t.Helper()
	r.tc.Kill(r.n3, syscall.SIGCONT)
	r.back = time.Now()
	r.tc.WaitLog(r.n3, `client_id=`+r.id+` reason="client disconnected normally"`, 1, harness.PartitionBound)
}

// awaitLateOp gives n3's op of the disconnect time to reach the stream.
// n3 sends it as soon as it runs, often on routes the others have not
// taken back yet: unacknowledged, it goes again after forward_timeout
// (5 s). Waited for that resend's round (or the bound, if the first send
// was taken).
func (r *returnLate) awaitLateOp() {
	for end := time.Now().Add(8 * time.Second); time.Now().Before(end) && harness.CountLog(r.n3, `"cluster: session ops not replicated yet; retrying" node=n3`) == 0; {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)
}

// check resumes the session on nd and asks for every acknowledged message,
// the QoS 2 ones once; then whether nd's read took the test's path.
func (r *returnLate) check(nd *harness.Node) {
	t := r.t
	t.Helper()
	back := harness.Resume(t, nd, r.id, harness.QueuedExpiry, 60*time.Second)
	got, lost := harness.ReceiveAll(back, r.owed, 30*time.Second)
	// A QoS 2 message sent again comes right behind the others.
	extra, _ := harness.ReceiveAll(back, []string{"none"}, 2*time.Second)
	for p, k := range extra {
		got[p] += k
	}
	since := readSince(nd, r.id, "n3")
	t.Logf("%d acknowledged, %d lost; %s's read of n3's held subject began at %s (n3 paused at %s, resumed at %s)",
		len(r.owed), len(lost), nd.Name, since.Format(stamp), r.paused.UTC().Format(stamp), r.back.UTC().Format(stamp))
	var twice []string
	for p, k := range got {
		if k > 1 && strings.Contains(p, "b-") {
			twice = append(twice, fmt.Sprintf("%s %d times", p, k))
		}
	}
	logs := func() string {
		return nd.Name + ":\n" + harness.GrepLog(nd, r.id) + "\nn3:\n" + harness.GrepLog(r.n3, r.id, "silence", "did not run", "replicated", "partition stream")
	}
	if len(lost) > 0 || len(twice) > 0 {
		t.Fatalf("%s lost %d of %d acknowledged messages %v, QoS 2 more than once %v\n%s", r.id, len(lost), len(r.owed), lost, twice, logs())
	}
	// The path: the read began at n3's op made after the pause (as
	// counted: by its time, or by n3's last heartbeat before the pause),
	// not at the session's last op before it (n3's op not in the stream
	// yet when n2 read it).
	if since.Before(r.paused.Add(-1500 * time.Millisecond)) {
		t.Skipf("%s read n3's held subject from %s, before n3's last heartbeat: n3's op made after the pause was not read; the test missed its path\n%s",
			nd.Name, since.Format(stamp), logs())
	}
}

const stamp = "15:04:05.000"

func ptr[T any](v T) *T { return &v }

// readSince returns where nd's last read ahead of peer's held subject for
// id began (its debug log: a claim's, or a janitor's whose first session
// is id); zero if it did not read it.
func readSince(nd *harness.Node, id, peer string) time.Time {
	re := regexp.MustCompile(`read ahead for a (session taken from the stream" node=\S+ client_id|silent node's sessions" node=\S+ sessions=1 first)=` +
		regexp.QuoteMeta(id) + ` peer=` + peer + ` since=(\S+)`)
	m := re.FindAllStringSubmatch(harness.GrepLog(nd, "read ahead for a"), -1)
	if len(m) == 0 {
		return time.Time{}
	}
	at, _ := time.Parse(time.RFC3339Nano, m[len(m)-1][2])
	return at
}
