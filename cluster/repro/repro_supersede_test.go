package repro_test

import (
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/clustertest"
)

// TestReproSupersededMoveIn: a newer claim of a session that is still
// moving live into a node, answered while the move waits, gets the session
// with every acknowledged message, and the session is not started afresh
// (test/jepsen TestClusterFull with long faults: seed 44, ps3, 23 lost;
// a seed 45 run, ps0 started afresh, 499 lost; bench/jepsen/RESULTS.md,
// "Session 18 (lead)" and "A claim answered "nothing to hand over" while
// the session was moving in"). n3 moves the session in from n1 and its
// move waits (there: a barrier of a node cut off); a newer claim asks n3
// to let go, and n3's answer waits for the move (awaitIn) until its
// bound. It answered "nothing to hand over": the claimer started the
// client afresh or resumed its own disowned copy as it was, while n3's
// move went on and adopted the session into a copy nobody owned, which
// took the messages publishers forwarded to n3 until it was fenced.
//
// Here the session is on n1, offline, and a publisher on n2 sends QoS 1
// and 2 messages throughout (those after n2's barrier are n3's to take). A CONNECT on n3 claims the id; n3's
// move asks n1 to finish only once a newer claim's release request was
// answered (move-cut). The client then connects on the newer claim's node:
// n2 (a third node) or n1 (the old owner, a claim back). Every
// acknowledged message must reach the session there, a QoS 2 one once,
// with Session Present 1.
func TestReproSupersededMoveIn(t *testing.T) {
	t.Parallel() // see harness.Main
	for _, tt := range []struct {
		name    string
		claimer int  // index of the newer claim's node
		again   bool // the client goes on to n3 once n3's move ended
	}{
		{"third", 1, false},
		{"back", 0, false},
		// The session moves live from n1 to n3 while n1's followers of
		// n3's held subject may not have read the last of what n3's
		// copy kept (n1 skips n2's forwards until its own move out
		// ends: n2's barrier came): test/jepsen TestClusterFull seed
		// 44, ps0, 3 lost.
		{"again", 0, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			supersededMoveIn(t, "st"+tt.name, tt.claimer, tt.again)
		})
	}
}

func supersededMoveIn(t *testing.T, prefix string, claimer int, again bool) {
	id := prefix + "-sub"
	// No adoption by the janitor: the session moves by the client's
	// claims only. A queue that takes everything published meanwhile.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "move-cut=" + id + "@n3", Config: "cluster:\n  adopt_after: 60s\n  forward_timeout: 15s\nlimits:\n  max_queued: 100000\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	to := tc.Nodes[claimer]
	sub, pub := harness.PersistentPair(t, n1, n2, prefix, harness.QueuedExpiry)
	sub.Disconnect(&paho.Disconnect{}) // the session stays on n1, offline
	tc.WaitLog(n1, "client_id="+id+` reason="client disconnected normally"`, 1, harness.Wait)
	pp := &pacedPub{t: t, nd: n2, id: prefix + "-pub", prefix: prefix, pub: pub}
	for range 10 {
		pp.publish()
	}

	// n3 claims the id; n1 hands the session over live, its copy
	// disowned, and n3's move waits before its finish. Then the newer
	// claim, from the background: a publish after n2's barrier waits
	// for the move's adoption, which waits for that claim's answer.
	claimOn(t, tc, n3, id, harness.QueuedExpiry)
	back := make(chan resumedClient, 1)
	go func() {
		const waits = `"cluster: test fault: the move's finish waits until a newer claim was answered" node=n3 client_id=`
		for start := time.Now(); harness.CountLog(n3, waits+id) == 0; time.Sleep(20 * time.Millisecond) {
			if time.Since(start) > 60*time.Second {
				back <- resumedClient{}
				return
			}
		}
		time.Sleep(200 * time.Millisecond) // a few publishes into the window
		back <- <-connectKeeping(t, to, id, harness.QueuedExpiry)
	}()

	// Publishing goes on until the client is back and n3's move ended,
	// and a second more.
	moved := func() bool {
		return harness.CountLog(n3, `"session moved here" node=n3 client_id=`+id) > 0 ||
			harness.CountLog(n3, `"cluster: moving session: superseded while it waited`) > 0
	}
	var (
		r    resumedClient
		in   bool
		stop time.Time
	)
	for start := time.Now(); stop.IsZero() || time.Now().Before(stop); pp.publish() {
		if time.Since(start) > 120*time.Second {
			t.Fatalf("%s not back on %s with n3's move ended within 120 s; %s:\n%s\nn3:\n%s", id, to.Name, to.Name,
				harness.GrepLog(to, "client_id="+id), harness.GrepLog(n3, "client_id="+id))
		}
		if !in {
			select {
			case r, in = <-back:
				if r.c == nil {
					t.Fatalf("%s not connected on %s after n3's move waited; %s:\n%s\nn3:\n%s", id, to.Name, to.Name,
						harness.GrepLog(to, "client_id="+id), harness.GrepLog(n3, "client_id="+id))
				}
			default:
			}
		}
		if in && stop.IsZero() && moved() {
			stop = time.Now().Add(time.Second)
		}
	}
	if harness.CountLog(n3, `"cluster: a newer claim asked for a session still moving here`) == 0 {
		t.Errorf("n3's move of %s was not waited for by a newer claim's answer: the test missed the path it is about; n3:\n%s",
			id, harness.GrepLog(n3, "client_id="+id))
	}
	if !r.present {
		t.Errorf("%s started afresh on %s (Session Present 0)", id, to.Name)
	}

	got := map[string]int{}
	if again {
		// What the client got on n1 is acknowledged there: it does
		// not come again on n3.
		drainFor(r.c, 500*time.Millisecond, func(p string) { got[p]++ })
		r.c.Disconnect(&paho.Disconnect{})
		back2 := connectKeeping(t, n3, id, harness.QueuedExpiry)
		var stop2 time.Time
		for start := time.Now(); stop2.IsZero() || time.Now().Before(stop2); pp.publish() {
			if time.Since(start) > 90*time.Second {
				t.Fatalf("%s not back on n3 within 90 s; n3:\n%s", id, harness.GrepLog(n3, "client_id="+id))
			}
			if stop2.IsZero() {
				select {
				case r = <-back2:
					if r.c == nil {
						t.Fatalf("%s not connected on n3 within 60 s; n3:\n%s", id, harness.GrepLog(n3, "client_id="+id))
					}
					stop2 = time.Now().Add(time.Second)
				default:
				}
			}
		}
		if !r.present {
			t.Errorf("%s started afresh on n3 (Session Present 0)", id)
		}
		to = n3
	}
	t.Logf("%d messages acknowledged, %d with unknown outcome; n3 kept %d for its copy after the move (n1: %d)", len(pp.want), pp.unknown,
		harness.CountLog(n3, `"cluster: message for a disowned copy kept in the held subject" node=n3 clients=[`+id+`]`),
		harness.CountLog(n1, `"cluster: message for a disowned copy kept in the held subject" node=n1 clients=[`+id+`]`))
	want := slices.DeleteFunc(slices.Clone(pp.want), func(m string) bool { return got[m] > 0 })
	more, lost := harness.ReceiveAll(r.c, want, 30*time.Second)
	for m, n := range more {
		got[m] += n
	}
	// The rest: a QoS 2 message that comes twice may come late.
	drainFor(r.c, 2*time.Second, func(p string) { got[p]++ })
	if len(lost) > 0 {
		t.Errorf("%d of %d acknowledged messages lost: %v\nn1:\n%s\nn3:\n%s\n%s:\n%s", len(lost), len(pp.want), lost[:min(len(lost), 20)],
			harness.GrepLog(n1, "client_id="+prefix, "cluster:"), harness.GrepLog(n3, "client_id="+prefix, "cluster:"),
			to.Name, harness.GrepLog(to, "client_id="+prefix, "cluster:"))
	}
	for m, n := range got {
		if m[1] == '2' && n > 1 {
			t.Errorf("QoS 2 message %s delivered %d times", m, n)
		}
	}
}

// resumedClient is a client connected with CleanStart 0, and whether its
// CONNACK said Session Present.
type resumedClient struct {
	c       *harness.Client
	present bool
}

// connectKeeping connects id (CleanStart 0) to nd in the background until a
// CONNACK 0 comes, and sends the client on the channel with its Session
// Present (nil after 60 s). Unlike harness.ResumeInBackground it keeps a client
// whose session was started afresh: that is what the caller checks.
func connectKeeping(t *testing.T, nd *harness.Node, id string, expiry uint32) <-chan resumedClient {
	back := make(chan resumedClient, 1)
	go func() {
		for d := time.Now().Add(60 * time.Second); time.Now().Before(d); time.Sleep(100 * time.Millisecond) {
			c, ack, err := clustertest.Dial(t, nd.MQTT, &paho.Connect{ClientID: id, CleanStart: false, KeepAlive: 30,
				Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
			if err != nil {
				continue
			}
			if ack.ReasonCode != 0 {
				c.Disconnect(&paho.Disconnect{})
				continue
			}
			back <- resumedClient{harness.WrapClient(c), ack.SessionPresent}
			return
		}
		back <- resumedClient{}
	}()
	return back
}

// drainFor hands take the payload of every message (probes skipped) c gets
// within d.
func drainFor(c *harness.Client, d time.Duration, take func(string)) {
	deadline := time.After(d)
	for {
		select {
		case p := <-c.In:
			if s := string(p.Payload); s != "probe" {
				take(s)
			}
		case <-deadline:
			return
		}
	}
}

// TestReproClaimBackSkips: a session claimed back onto its old owner gets
// the messages of a third node published after the claim. The old owner
// (n2) handed the session over live to n3 and noted, per node, whose
// barrier came: their messages were the new copy's, and n2 skipped them
// for the session. Claimed back, the session moves back to n2 (n3's move
// adopted it, its finish declined), yet n2 went on skipping them until its
// first move out ended (liveConfirmTimeout), and nothing else took them.
//
// Here the session is on n2, offline, and a publisher on n1 sends QoS 1
// and 2 throughout. A CONNECT on n3 claims the id; n3's move asks n2 to
// finish only once a newer claim asked n3 to let go (finish-asked); the
// client then resumes on n2, and publishing goes on for 3 s.
func TestReproClaimBackSkips(t *testing.T) {
	t.Parallel() // see harness.Main
	const prefix = "cbs"
	id := prefix + "-sub"
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "finish-asked=" + id + "@n3", Config: "cluster:\n  adopt_after: 60s\n  forward_timeout: 15s\nlimits:\n  max_queued: 100000\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	sub, pub := harness.PersistentPair(t, n2, n1, prefix, harness.QueuedExpiry)
	sub.Disconnect(&paho.Disconnect{}) // the session stays on n2, offline
	tc.WaitLog(n2, "client_id="+id+` reason="client disconnected normally"`, 1, harness.Wait)
	pp := &pacedPub{t: t, nd: n1, id: prefix + "-pub", prefix: prefix, pub: pub}
	for range 10 {
		pp.publish()
	}
	claimOn(t, tc, n3, id, harness.QueuedExpiry)
	back := make(chan resumedClient, 1)
	go func() {
		const waits = `"cluster: test fault: the move's finish waits for a newer claim" node=n3 client_id=`
		for start := time.Now(); harness.CountLog(n3, waits+id) == 0; time.Sleep(20 * time.Millisecond) {
			if time.Since(start) > 60*time.Second {
				back <- resumedClient{}
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
		back <- <-connectKeeping(t, n2, id, harness.QueuedExpiry)
	}()
	var (
		r    resumedClient
		in   bool
		stop time.Time
	)
	for start := time.Now(); stop.IsZero() || time.Now().Before(stop); pp.publish() {
		if time.Since(start) > 120*time.Second {
			t.Fatalf("%s not back on n2 within 120 s; n2:\n%s\nn3:\n%s", id, harness.GrepLog(n2, "client_id="+id), harness.GrepLog(n3, "client_id="+id))
		}
		if !in {
			select {
			case r, in = <-back:
				if r.c == nil {
					t.Fatalf("%s not connected on n2; n2:\n%s\nn3:\n%s", id, harness.GrepLog(n2, "client_id="+id), harness.GrepLog(n3, "client_id="+id))
				}
				stop = time.Now().Add(3 * time.Second)
			default:
			}
		}
	}
	if !r.present {
		t.Errorf("%s started afresh on n2 (Session Present 0)", id)
	}
	t.Logf("%d messages acknowledged, %d with unknown outcome", len(pp.want), pp.unknown)
	got, lost := harness.ReceiveAll(r.c, pp.want, 30*time.Second)
	drainFor(r.c, 2*time.Second, func(p string) { got[p]++ })
	if len(lost) > 0 {
		t.Errorf("%d of %d acknowledged messages lost: %v\nn2:\n%s\nn3:\n%s", len(lost), len(pp.want), lost[:min(len(lost), 20)],
			harness.GrepLog(n2, "client_id="+prefix, "cluster:"), harness.GrepLog(n3, "client_id="+prefix, "cluster:"))
	}
	for m, n := range got {
		if m[1] == '2' && n > 1 {
			t.Errorf("QoS 2 message %s delivered %d times", m, n)
		}
	}
}
