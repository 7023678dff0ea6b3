package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/packet"
)

// faultEnv names the environment variable through which a process test
// asks a node for a fault at a step no signal can hit in time. It is for
// tests only: unset (always, in production) it costs a nil check.
//
//	stall-inbound=CLIENT@NODE  on node NODE, the QoS 2 packet ids of
//	                      CLIENT (OpInboundPut) are kept in the node's own
//	                      store but never replicated: a Wait for them
//	                      times out, as if the node died before its
//	                      partition stream took them
//	stop-ops=PAYLOAD@NODE  on NODE, from the op that queues the message
//	                      whose payload is PAYLOAD for a session
//	                      (OpQueuePut) on, no session op is replicated:
//	                      each stays in the node's own store and nothing
//	                      after it is confirmed, as on a node killed right
//	                      after it journalled that forward, before its
//	                      partition stream took the op (test/jepsen
//	                      TestClusterFull seed 43: n2 took pub2#250 for
//	                      ps0 3 ms before its kill); it logs once that op
//	                      is in its own store, for a test to kill it then
//	stall-queue=CLIENT@NODE  on node NODE, the messages queued for
//	                      CLIENT (OpQueuePut) are kept the same way: the
//	                      node dies, in effect, before its delivery of
//	                      them is durable, while its other writes (a
//	                      share group's claim) go on
//	served-unclaimed=CLIENT@NODE  on NODE, a first routing of publisher
//	                      CLIENT's QoS 2 messages (or of any QoS 2
//	                      message served to member CLIENT) claims none of
//	                      the share groups it served here (claimServed),
//	                      as when the node died between its member's copy
//	                      becoming durable and the claim's append; logged
//	                      once
//	served-silent=CLIENT@NODE  on NODE, the first share group claim of
//	                      a first routing of publisher CLIENT's QoS 2
//	                      message (claimServed) is not appended and fails
//	                      servedSilentAfter later with nats.go's "timeout
//	                      waiting for ack": what an append sent to a
//	                      partition stream whose leader was just killed
//	                      gets (test/jepsen TestClusterFull seed 325);
//	                      logged
//	queued-leaderless=CLIENT@NODE  on NODE, the share group claims of
//	                      CLIENT's queued copies made at its adoption
//	                      (claimQueued) are not appended and fail with
//	                      nats.go's "no response from stream" for
//	                      queuedLeaderless from the first: what an
//	                      append to a partition stream without a leader
//	                      gets (test/jepsen TestClusterFull seeds 440,
//	                      447); logged once
//	queue-late=CLIENT@NODE  on NODE, the first message queued for CLIENT
//	                      (OpQueuePut) reaches its partition stream only
//	                      queueLateDelay later, and nothing after it is
//	                      confirmed before (tickets are node-wide): the
//	                      copy of a first routing not durable within
//	                      forward_timeout, as behind a partition stream
//	                      electing a leader (test/jepsen TestClusterFull
//	                      seed 268, gap A); logged when held and when sent
//	served-late=CLIENT@NODE  on NODE, the share group claims of a first
//	                      routing of publisher CLIENT's QoS 2 message (or
//	                      of one served to member CLIENT) wait
//	                      servedLateDelay once the member's copy is
//	                      durable, before they are appended: the window in
//	                      which a node killed after its member's delivery
//	                      left no claim (test/jepsen TestClusterFull seed
//	                      279: 122 ms); logged per message
//	read-late=CLIENT@NODE  on NODE, reading CLIENT's session from its
//	                      partition stream (a claim whose previous owner
//	                      did not answer) fails until the node has held
//	                      messages for a dead node (orphan interest) and
//	                      stopped again, as when the stream elects a
//	                      leader for that long
//	delay-release=CLIENT@NODE  on node NODE, a claim of CLIENT waits
//	                      releaseDelay between writing the owner record and
//	                      asking the previous owner to let go, as a slow
//	                      route would: the previous owner's watcher sees
//	                      the record and fences the session first
//	no-quorum=CLIENT@NODE  on node NODE, from its start, CLIENT's partition
//	                      stream takes no ops from it (they wait in its
//	                      queue) until the node's first read of CLIENT's
//	                      session from that stream, which fails just as
//	                      the stream comes back and the queued ops are
//	                      sent: a partition stream without a quorum
//	                      after the node's restart, back a moment too
//	                      late for a claim
//	hold-unanswered=COUNT@NODE  on node NODE, the first COUNT holds for a
//	                      dead node's sessions (held.go) are not
//	                      published and fail with "no response from
//	                      stream", as nats.go reports a hold while the
//	                      partition stream elects a leader (no election
//	                      can be timed from outside to meet a hold)
//	hold-answer-late=DURATION@NODE  on node NODE, every hold for a
//	                      node's sessions (held.go) is not published at
//	                      first and fails with "no response from stream"
//	                      only DURATION later; its lane (heldlane.go)
//	                      then publishes it again: a hold made while the
//	                      held subject's partition stream elects a
//	                      leader, stored seconds
//	                      after its routing (test/jepsen TestClusterFull
//	                      seed 187, session 23: 1.9 s and 2.2 s)
//	hold-elect=DURATION@NODE  on node NODE, for DURATION after it drops
//	                      a node whose routes closed, every append of a
//	                      hold to that node's held subject, published
//	                      again or not, fails at once with "no response
//	                      from stream", not published: the held subject's
//	                      partition stream electing a leader after its
//	                      leader, the dead node, was killed; the holds
//	                      routed after it land at once (test/jepsen
//	                      TestClusterFull seed 221's second path,
//	                      bench/jepsen/RESULTS.md "t221"); logged once
//	                      per dropped node
//	hold-silent=COUNT@NODE  on node NODE, the first COUNT holds for its
//	                      own full store (diskhold.go) are not published
//	                      and never answered: what such a hold gets from
//	                      a stream leader on the full node itself, whose
//	                      JetStream the full disk shut down
//	held-pending=CLIENT@NODE  on node NODE, a release request for CLIENT
//	                      finds the session's held messages still being
//	                      applied, both times it looks (awaitHeld waits
//	                      until the answer's bound, heldWaitMax), and
//	                      NODE's owner watcher does not fence CLIENT's
//	                      session: as when the session was taken from the
//	                      stream here and its held reads were slow, and
//	                      the newer record was seen before the session was
//	                      in the server; named again, for several clients
//	release-late=CLIENT@NODE  on node NODE, a release request for CLIENT
//	                      is handled only heldWaitMax after it came, its
//	                      answer's bounds counted from then, as one whose
//	                      way was that slow (or, before release requests
//	                      were answered side by side, one queued behind
//	                      another request's held wait: test/jepsen
//	                      TestClusterFull, requests seconds late); with
//	                      held-pending its answer comes after the
//	                      claimer's releaseTimeout
//	answer-late=CLIENT@NODE  on node NODE, a release request for CLIENT
//	                      that took no unread mark (the session is here,
//	                      or moving here and adopted by now) waits until
//	                      the held waits' bound (heldWaitMax from when it
//	                      came) before it answers: as when the session
//	                      moved here live and the reads of its old
//	                      owner's held subject, named by the move, are
//	                      not done (test/jepsen TestClusterFull seed 196:
//	                      n2 answered n1's claim of g0m0 53 ms after its
//	                      move in was adopted, while a claim of its own
//	                      read the stream)
//	finish-late=CLIENT@NODE  on NODE, a live move of CLIENT here asks
//	                      its previous owner to finish only once NODE
//	                      heard again from a node it had dropped, and
//	                      finishLate after that (at most finishLateMax):
//	                      the previous owner, out of contact too, fences
//	                      its sessions meanwhile, as a loaded node's
//	                      move outlasts the other's return (test/jepsen
//	                      TestClusterFull seed 41)
//	held-fenced=CLIENT@NODE  on node NODE, a release request for CLIENT
//	                      that found no unread mark then finds the
//	                      session's held messages being applied until
//	                      NODE's fence (after a loss of contact) has
//	                      ended CLIENT's session, within the answer's
//	                      bound: as when an adoption took the mark just
//	                      before (beginAdopt) and its held reads ended
//	                      just after such a fence (test/jepsen
//	                      TestClusterFull seed 42)
//	overtaken=CLIENT@NODE  on node NODE, a claim that took CLIENT's
//	                      session from the stream puts it in the server
//	                      only once NODE's owner watcher saw a record of
//	                      CLIENT naming another node (at most
//	                      overtakenWait): a newer claim came while the
//	                      held subjects were read, as under load
//	adopt-late=CLIENT@NODE  on NODE, a claim of CLIENT that takes the
//	                      session from the stream waits, once its held
//	                      subjects are read ahead (share groups claimed),
//	                      until a newer claim of CLIENT elsewhere asked
//	                      this node to let go (at most adoptLateMax), as
//	                      a claim outlasted by its client's CONNACK
//	                      timeout under load is
//	left-unadopted=CLIENT@NODE  on NODE, the adoption after the start of
//	                      the sessions whose records name NODE but that it
//	                      did not restore (adoptLeftHere) passes CLIENT
//	                      over, as while that scan is not done (it took
//	                      4-6 s after a restart in TestReproClaimOwnPublish)
//	adopt-wait=CLIENT@NODE  on NODE, a claim of CLIENT that takes the
//	                      session from the stream waits adoptWait once
//	                      its held subjects are read ahead, before the
//	                      adoption: publishers go on holding for the
//	                      session meanwhile, as while a loaded node reads
//	                      its other held subjects after its own; named
//	                      again, for several clients
//	adopt-wait-for=DURATION@NODE  on NODE, adopt-wait's wait lasts
//	                      DURATION (at most adoptWaitMax) instead of
//	                      adoptWait: a claim whose keys are out while
//	                      another node restarts and publishes, as seed
//	                      260's were for 5 s while its partition elected
//	move-late=CLIENT@NODE  on NODE, a live move of CLIENT's session
//	                      here waits, once its previous owner exported
//	                      the session (the move's finish), until a newer
//	                      claim of CLIENT asked this node to let go (at
//	                      most moveLateMax), before it adopts the
//	                      session: as a loaded node's last step of a
//	                      move outlasts its client's CONNACK timeout, and
//	                      the client's next CONNECT claims the id again
//	finish-asked=CLIENT@NODE  on NODE, a live move of CLIENT here asks
//	                      its previous owner to finish only once a newer
//	                      claim of CLIENT asked NODE to let go (at most
//	                      moveLateMax): as a loaded node's move outlasts
//	                      its client's CONNACK timeout before its last
//	                      step, and the client's next CONNECT claims the
//	                      id back on the previous owner (test/jepsen
//	                      TestClusterFull seed 44, ps2); named again,
//	                      for several clients (one request lets all go)
//	finish-asked-for=DURATION@NODE  on NODE, finish-asked's and
//	                      move-late's bound is DURATION (at most
//	                      moveLateMax) instead of moveLateMax: for a test
//	                      that needs the wait, not its whole length
//	                      (TestReproGroupPublishDuringMovesIn waited 60
//	                      s for its moves to go on)
//	move-cut=CLIENT@NODE  on NODE, a live move of CLIENT here asks its
//	                      previous owner to finish only once a newer
//	                      claim of CLIENT asked NODE to let go and was
//	                      answered (at most moveLateMax): the answer's
//	                      wait for the move (awaitIn) is cut at its
//	                      bound, as when the move waits for a barrier of
//	                      a node cut off or killed (test/jepsen
//	                      TestClusterFull seeds 44 and 45 with long
//	                      faults)
//	register-late=CLIENT@NODE  on NODE, a live move of CLIENT here,
//	                      the previous owner's handover taken, registers
//	                      (step 1) only once a newer claim of CLIENT asked
//	                      NODE to let go and was answered (at most
//	                      moveLateMax): the wait for the gate that kept
//	                      the move of test/jepsen TestClusterFull seed
//	                      887 unregistered while the newer claim asked
//	                      (TestReproMoveUnregistered)
//	seal-late=CLIENT@NODE  on NODE, a live move of CLIENT here, once its
//	                      adoption has begun (sealed: a newer claim's
//	                      release request that comes now waits for it, to
//	                      the answer's last bound, and is then answered
//	                      without the session), waits until the node
//	                      stops (at most moveLateMax): as a loaded node's
//	                      adoption outlasting that bound, for a test to
//	                      kill the node there
//	seal-answered=CLIENT@NODE  on NODE, a live move of CLIENT here, once
//	                      its adoption has begun (sealed), waits until a
//	                      newer claim's release request was answered (at
//	                      most moveLateMax): as seal-late, without the
//	                      kill, so that the move adopts the session after
//	                      that answer
//	adopted-slow=CLIENT@NODE  on NODE, a live move of CLIENT here, once
//	                      the session is in the server, waits before its
//	                      durable wait until a newer claim's release
//	                      request was answered (at most moveLateMax) and
//	                      adoptedSlow after that: as a move whose
//	                      adoption's ops the partition streams confirmed
//	                      seconds late while the client, its CONNACK not
//	                      come, claimed the session on another node
//	                      (test/jepsen TestClusterFull seed 308: n1's move
//	                      of g1m1, handed to n3 at 22.27, waited until
//	                      24.91); the old owner's copy, off its tree
//	                      since the finish, stays in its server until this
//	                      move confirms (TestReproKeptPassOnOrder: the
//	                      old owner's follower claims held messages for
//	                      it meanwhile and passes them on here)
//	finish-record=CLIENT@NODE  on NODE, a live move of CLIENT here asks
//	                      its previous owner to finish only once the owner
//	                      watcher saw a newer claim's record of CLIENT
//	                      naming another node (at most moveLateMax): as a
//	                      move whose barrier waits outlast another node's
//	                      claim, whose release request does not come
//	connect-unconfirmed=CLIENT@NODE  on NODE, the first claim of CLIENT
//	                      by a CONNECT is written, and then fails as not
//	                      confirmed (as claim-unconfirmed for the
//	                      janitor's): the CONNECT is refused, no release
//	                      request is sent, and the record names NODE
//	handed-late=CLIENT@NODE  on NODE, the reads a live move of CLIENT
//	                      here begins from its previous owner's places
//	                      (beginHanded) wait until NODE lost CLIENT to a
//	                      newer claim (at most moveLateMax): as reads
//	                      slow under load that a fence overtakes
//	                      (test/jepsen TestClusterFull seed 53: n2's
//	                      read of n3's subject 12 ms after its fence)
//	gone-late=PEER@NODE   on NODE, PEER, its routes closed, is dropped
//	                      (its forwards out failed and held for it)
//	                      only once a session here caught up after
//	                      that (a claim's catch-up: no session
//	                      catching up any more, one having been), at
//	                      most goneLateMax after its routes closed: as
//	                      the expiry loop's tick, up to 250 ms, behind
//	                      a claim that read the stream at once
//	                      (test/jepsen TestClusterFull seed 53)
//	finish-gone=CLIENT@NODE  on NODE, a live move of CLIENT here asks
//	                      its previous owner to finish only once NODE no
//	                      longer hears from it (at most moveLateMax): as
//	                      an old owner killed or paused between its
//	                      answer and the move's last step
//	straddle-move=TOPIC@NODE  on NODE, the first QoS 1/2 publish to
//	                      TOPIC, once it has looked for sessions moving in
//	                      (liveMoves.local), waits until a live move into
//	                      NODE begins (at most straddleMax), then
//	                      straddleLinger more, before it plans its
//	                      forwards: as a publish descheduled on a loaded
//	                      node between its two looks
//	interest-late=PEER@NODE  on NODE, every control message of PEER
//	                      (its interest deltas and heartbeats) is handled
//	                      interestLate after it came, in order: NODE
//	                      routes by PEER's old interest that long, as
//	                      over a slow route under load, and sees the hold
//	                      keys of a copy's end (fenceHold) only after the
//	                      copy left PEER's tree
//	beat-backlog=PEER@NODE  on NODE, the control messages of PEER that
//	                      come while NODE's expiry loop has not run since
//	                      NODE resumed from a stall (SIGSTOP), or within
//	                      beatBacklog after the run that found the stall,
//	                      are handled beatBacklog after that run, in
//	                      order (and whatever comes after them on the
//	                      subscription): as a loaded node that reads a
//	                      pause's backlog after its first ticks
//	                      (test/jepsen TestCluster in a fresh clone,
//	                      session 26: n3 dropped n1 77 ms after a 3.9-s
//	                      pause and heard it again 161 ms later)
//	claim-unconfirmed=CLIENT@NODE  on NODE, the janitor's first claim of
//	                      CLIENT's record (a silent node's) is written,
//	                      and then fails as not confirmed, as a write
//	                      whose acknowledgement did not come in time under
//	                      load (context deadline exceeded): applied, and
//	                      not known to be
//	unconfirmed=TOPIC@NODE  on NODE, the first QoS 1/2 publish to TOPIC
//	                      that goes to another node is forwarded, held
//	                      and kept as usual, and its confirmation then
//	                      fails, as when a node did not confirm in time
//	                      (paused): the publisher is not answered and
//	                      sends the message again (a QoS 2 resend under
//	                      its Origin). A pause cannot be timed against
//	                      the silence that drops the node from the plan
//	janitor-late=CLIENT@NODE  on NODE, the janitor's adoption of a
//	                      chunk that holds CLIENT, its claims written,
//	                      reads what was held for the chunk only once a
//	                      claim of CLIENT asked NODE to let go and
//	                      janitorLateAfter more (at most janitorLateMax
//	                      in all): as when a loaded node's held reads
//	                      outlast a release answer's wait for them
//	                      (awaitHeld, heldWaitMax)
//	settle-wait=DURATION@NODE  on NODE, once its restored sessions
//	                      settled, their keys are announced only after
//	                      DURATION (its own held follower waits with it):
//	                      the others hold for the node meanwhile, as while
//	                      the announcement is on its way under load
//	held-leaderless=DURATION@NODE  on NODE, for DURATION from its return
//	                      from a silence (catchUpOnReturn), every attempt
//	                      of the follower of its own held subject fails as
//	                      JetStream answers it while that subject's
//	                      partition stream elects a leader, the node's
//	                      return having deposed the old one
//	                      (TestReproPausedNodeHeldOrder on main: n3's
//	                      ROOST_SESS_6 without a leader for 5.8 s after
//	                      its SIGCONT; on session 23's code the meta group
//	                      for 7.8 s: 503 "JetStream system temporarily
//	                      unavailable")
//	hold-paced=PEER[/DURATION]@NODE  on NODE, each hold for PEER's
//	                      sessions (held.go) is published holdPace after
//	                      it was made; one made before NODE heard PEER
//	                      again and published after is logged (once).
//	                      With DURATION, a hold still on its way when NODE
//	                      heard PEER again (made before, or within a
//	                      second after, while PEER's interest was fetched)
//	                      is published only DURATION after the partition
//	                      stream of PEER's held subject answers NODE again,
//	                      logged (once): a hold that stream took seconds
//	                      after PEER could read it again (pz25's "What is
//	                      left" 1; TestReproReturnHoldLanding)
//	held-fetch-lost=COUNT@NODE  on NODE, the first COUNT messages its
//	                      follower of its own held subject reads while it
//	                      drains (unsettled, or catching up on a return)
//	                      are neither applied nor acknowledged, as the
//	                      messages of a fetch whose reply the follower
//	                      never got (a leadership change while it was on
//	                      its way): the consumer delivers them again only
//	                      after its AckWait, after the later ones
//	                      (TestReproReturnFetchLost)
//	held-end-at-return=COUNT@NODE  on NODE, the first COUNT catch-ups on
//	                      its return from a silence take the end of its
//	                      held subject as it was when NODE found itself
//	                      back (its last message stored by then), and read
//	                      it one message a batch until that end, logged:
//	                      as when a hold another node made just before it
//	                      heard NODE again landed after the catch-up's
//	                      first read of that end, the stream's leader
//	                      having been deposed by NODE's return
//	                      (TestReproPausedNodeHeldOrder: q1-50, held 53 ms
//	                      before n1 heard n3 again, landed 0.53 s after)
//	held-late=DURATION@NODE  on NODE, the follower of its own held
//	                      subject applies each message only DURATION
//	                      after it was held, as a loaded node's follower
//	                      lags behind the forwards of the same messages
//	                      (their sessions have completed those by then)
//	adopt-stall=CLIENT@NODE  on NODE, a claim of CLIENT, once its
//	                      previous owner answered (or did not, in
//	                      releaseTimeout), waits adoptStallMax (or until
//	                      the node stops) before it takes the session:
//	                      for a test to kill the node between a claim's
//	                      answer and its adoption, as test/jepsen
//	                      TestClusterFull did (b41r3 g1m1, 0.1 s after);
//	                      named again, for several clients
//	own-held-unreached=CLIENT@NODE  on NODE, the follower of its own held
//	                      subject does not reach its consumer while
//	                      CLIENT's session is here: nothing held for NODE
//	                      is applied by this process (gate.next stays 0),
//	                      as when its consumer's creation times out after
//	                      a restart (TestClusterFull seed 41, session 22)
//	held-stall=CLIENT@NODE  on NODE, a follower of a held subject does
//	                      not read while CLIENT's session is among those
//	                      it follows: what publishers hold after the
//	                      session's adoption read ahead is not applied
//	                      there, and a release request's wait for it
//	                      (awaitHeld) is cut at its bound, as when those
//	                      reads are slow under load
//	adopt-ops-late=CLIENT@NODE  on NODE, the ops of CLIENT from the
//	                      first adoption's rollup on are held out of its
//	                      partition's queue (nothing after them is
//	                      confirmed: queue-late's stall) until a later
//	                      claim of CLIENT on NODE has read the session
//	                      from the stream, and then queued in order: as
//	                      an adoption whose ops its partition stream did
//	                      not take (no leader) past the next claim's wait
//	                      for them (awaitSent, forward_timeout), landing
//	                      after its read (test/jepsen TestClusterFull
//	                      short faults, seed 414: no op of n2's first
//	                      adoption of g0m0 reached the stream before its
//	                      second claim read it; TestReproWatchReplacedCopy);
//	                      at most adoptOpsLateMax, then queued in order
//	held-until-lost=CLIENT@NODE  on NODE, as held-stall, until another
//	                      node's claim of CLIENT disowned the copy here
//	                      (sessions.lost): the follower then reads at
//	                      once, for a copy that is no longer the
//	                      session's, as a follower slow under load whose
//	                      read a newer claim overtook (test/jepsen
//	                      TestClusterFull short faults, seed 453: n2's
//	                      follower of n3's subject claimed two held g1
//	                      messages for g1m0 0.4 s after n1's claim fenced
//	                      n2's copy; TestReproHeldToDisowned)
//	confirm-late=TOPIC@NODE  on NODE, the QoS 2 messages on TOPIC that
//	                      other nodes forward here are delivered as usual
//	                      but never confirmed: their publishing node
//	                      waits (up to forward_timeout), and holds them
//	                      for NODE if its routes close meanwhile, as for
//	                      a node killed after its sessions took a forward
//	                      and before its confirmation left
//	claim-late=CLIENT@NODE  on NODE, the first held message whose share
//	                      group is claimed for CLIENT (claimGroups) is
//	                      delivered only once CLIENT's session has left
//	                      the server (at most claimLateMax): as a
//	                      restored copy dropped for a claim elsewhere
//	                      between a held message's claim and its
//	                      delivery (test/jepsen TestClusterFull seed 41)
//	owners-late=DURATION@NODE  on NODE, the read of the owner records
//	                      at start (which restored sessions are still
//	                      this node's) begins only DURATION after the
//	                      session streams opened: the node serves and
//	                      routes meanwhile with its restored sessions
//	                      unsettled, as a restarted node whose ownership
//	                      bucket elects a leader (test/jepsen
//	                      TestClusterFull seed 42: 8 s)
//	streams-late=DURATION@NODE  on NODE, the session streams open only
//	                      DURATION after the ownership records did, when
//	                      the node restored sessions at start: it serves
//	                      and takes forwards meanwhile with nothing of its
//	                      own in the streams, as a restarted node whose
//	                      partition streams elect leaders (test/jepsen
//	                      TestClusterFull seed 108: 3 s)
//	drop-unannounced=DURATION@NODE  on NODE, once it dropped a restored
//	                      session owned elsewhere, it sends no interest
//	                      change and no heartbeat for DURATION (at most
//	                      dropMuteMax, under deadAfter): the others go on
//	                      routing the dropped copy's share groups here, as
//	                      when the change travels late (test/jepsen
//	                      TestClusterFull seed 45: a forward 3 ms after
//	                      the drop)
//	move-linger=DURATION@NODE  on NODE, a live move out keeps its
//	                      session's share groups (movedOut, for pass-ons
//	                      and redirects to the new owner) DURATION (at
//	                      most moveLingerMax) rather than moveLinger, so
//	                      that a test's steps after the move, slow on a
//	                      busy machine (a stream's election after a
//	                      kill), still fall within it
//	passon-late=DURATION@NODE  on NODE, a forwarded message's share
//	                      groups passed on to a node with a member
//	                      (passon.go) go on only DURATION later (at most
//	                      passOnLateMax), as a loaded node's extra hop is
//	                      slower than the publisher's next forward
//	                      (test/jepsen TestClusterFull seed 42: 190 ms)
//	held-lag=CLIENT@NODE  on NODE, a read of a held subject for sessions
//	                      CLIENT is among (a follower's, a claim's read
//	                      ahead) delivers each message only heldLag
//	                      after it was stored, as a loaded node's
//	                      follower lags (test/jepsen TestClusterFull
//	                      seed 883, session 28: n1 read n2's kept copy
//	                      of pub2#134 about 250 ms after it was stored,
//	                      after g1m0 had moved out; TestReproKeptPassOnOrder)
//	missed-late=DURATION@NODE  on NODE, a held message's share groups
//	                      claimed for a member that moved out live
//	                      before the delivery (held.go passMissed) go on
//	                      to its new owner only DURATION later (at most
//	                      passOnLateMax), as a loaded node's claim and
//	                      pass-on outlast the new owner's adoption
//	                      (test/jepsen TestClusterFull seed 883, session
//	                      28: n1 passed g1m0's pub2#134 on 45 ms after
//	                      n2 adopted it; TestReproKeptPassOnOrder)
//	finish-slow=CLIENT@NODE  on NODE, a live move of CLIENT here asks
//	                      its previous owner to finish finishSlow after
//	                      its barriers came, as a loaded node's move
//	                      takes (barriers asked again, a slow route):
//	                      the old owner's copy, disowned since its
//	                      answer, and this node's move both take what
//	                      publishers route to the session meanwhile
//	                      (test/jepsen TestClusterFull seed 44: g0m1)
//	claim-unanswered=COUNT@NODE  on NODE, the first COUNT share group
//	                      claims (claimNamed) are not appended and fail
//	                      with "no response from stream", as a claim
//	                      does while its partition stream elects a leader
//	                      (seen on a restarted node's first claims)
//	ahead-unanswered=CLIENT@NODE  on NODE, every share group claim that
//	                      a read ahead for CLIENT's session taken from
//	                      the stream makes (readAhead, claimFor) is not
//	                      appended and fails with "no response from
//	                      stream", as while the claims' partition stream
//	                      elects a leader: each held subject holding a
//	                      group message for CLIENT is read ahead only up
//	                      to it, and the adoption leaves the rest to the
//	                      subject's follower ("not read yet; following";
//	                      test/jepsen TestClusterFull short faults, seeds
//	                      194 and 170); logged once
//	rollup-lost=CLIENT@NODE  on NODE, the first rollup of CLIENT's
//	                      session (the first op of an adoption) is not
//	                      published, and fails after rollupLostAfter
//	                      with "no response from stream", as nats.go
//	                      reports a publish lost in its partition
//	                      stream's leader change: the sender sends it
//	                      again, and CLIENT's ops published meanwhile may
//	                      have reached the stream before it
//	ops-after-lost=CLIENT@NODE  on NODE, from its start, CLIENT's
//	                      partition stream takes no ops from it (they
//	                      wait in its queue) until opsAfterLost after
//	                      another node claimed CLIENT from it: a node
//	                      whose adoption's rollup waited (its partition
//	                      stream without a quorum for it after a pause)
//	                      while the client went back to the previous
//	                      owner, which completed QoS 2 exchanges before
//	                      the rollup landed (test/jepsen TestClusterFull
//	                      seed 46)
//	ops-offline-lost=CLIENT@NODE  on NODE, from the op that journals
//	                      CLIENT's session as offline (its client gone),
//	                      CLIENT's partition stream takes no ops from it
//	                      (they wait in its queue) until NODE's copy,
//	                      disowned by another node's claim, kept a
//	                      message it took (keep.go): the ops NODE wrote
//	                      for the session before the claim land after the
//	                      kept copy, as when the partition stream had no
//	                      quorum for NODE (test/jepsen TestClusterFull
//	                      seed 52, session 21: n3's QueuePuts for ps1
//	                      stored 177 ms after n1's claim fenced n3's
//	                      copy, which had kept pub1#382 meanwhile)
//	ops-offline-timed=CLIENT@NODE  as ops-offline-lost, but the ops
//	                      wait until opsTimedAfterLost after another node
//	                      claimed CLIENT from NODE, kept message or not
//	                      (past a delay-release claim's read of the
//	                      stream), and each message queued for
//	                      CLIENT meanwhile is logged: a message NODE's
//	                      copy took before it learned of the claim lands
//	                      after the claimer read the stream, as when the
//	                      partition stream had no quorum for NODE back
//	                      from a pause (TestReproPausedOwnerMovesLive,
//	                      session 28: n3's QueuePut of q2-19 landed 1.8 s
//	                      after n2's read; TestReproLateOpsKept)
//	land-before-fence=CLIENT@NODE  on NODE, from the op that journals
//	                      CLIENT's session as offline, CLIENT's partition
//	                      stream takes no ops from it (each message
//	                      queued for CLIENT meanwhile is logged), and a
//	                      claim of CLIENT elsewhere is not acted on: its
//	                      release request goes unanswered (the claimer
//	                      reads the stream) and the watcher leaves its
//	                      record until the claimer's first op is in the
//	                      stream, the ops held here have gone out and
//	                      landed behind it, and only then fences CLIENT:
//	                      a node back from a pause whose op lands after
//	                      the claimer's read, before it learns of the
//	                      claim (test/jepsen TestClusterFull long faults,
//	                      seed 1152: n1's QueuePut of pub1#139 for g0m1
//	                      landed at e4 behind n3's and n2's ops, 45 ms
//	                      before n1's fence; TestReproLateOpsLanded)
//	ops-after-rollup=CLIENT@NODE  on NODE, the append that queues the
//	                      first rollup of CLIENT's session (an adoption's
//	                      first op) returns rollupPause late, as on a
//	                      node descheduled while it journals an adopted
//	                      session; once that rollup is acknowledged, the
//	                      partition stream takes no more ops from NODE
//	                      (they wait in its queue), as when NODE is
//	                      killed right after that acknowledgement: for a
//	                      test to kill it then (test/jepsen
//	                      TestClusterFull seed 48: n3 killed 127 ms after
//	                      a live move's adoption, whose rollup held 60 of
//	                      the session's 229 messages)
//	steps-late=CLIENT@NODE  on NODE, the connection of CLIENT's session,
//	                      disowned for another node's claim (a fence or a
//	                      release answer), is taken over only stepsLate
//	                      after the first such disown: what its client
//	                      sends meanwhile (PUBRECs, PUBCOMPs) is applied to
//	                      the disowned copy only, as the packets a
//	                      taken-over connection's last read applies after
//	                      the disown (test/jepsen TestClusterFull seed 49,
//	                      ps2: a PUBREC and 27 PUBCOMPs)
//	ops-after-keep=CLIENT@NODE  on NODE, once CLIENT's session went
//	                      offline (its OpSessionPut with a disconnect
//	                      time), CLIENT's partition stream takes no ops
//	                      from NODE until opsAfterKeep after NODE's
//	                      disowned copy of CLIENT kept its first message
//	                      (keep.go): the copy's ops from before the
//	                      disown land in the stream after what it kept
//	                      first, as a
//	                      partition stream that took a paused node's
//	                      queued ops only after the node had resumed,
//	                      seen the newer claim and kept messages
//	                      (test/jepsen TestClusterFull seed 49: 0.54 s
//	                      after the disown)
//	held-empty=DURATION@NODE  on NODE, for DURATION from the first read
//	                      of the follower of what is held for NODE, every
//	                      such read comes back empty after heldEmptyPause,
//	                      without an error: what nats.go v1.56 makes of a
//	                      FetchNoWait that the partition stream's
//	                      consumer does not answer (its leader being
//	                      elected after the node's restart)
//	name-own-always=CLIENT@NODE  on NODE, every live handover of CLIENT
//	                      names NODE's own held subject for the new owner
//	                      to read on from (withOwnBehind), from its
//	                      follower's durable place, whether or not the
//	                      others may have held for NODE and its follower
//	                      is behind: the named-places path at every move,
//	                      as loss46's first version took it (bench/jepsen
//	                      RESULTS.md, "loss46", left 1)
//	wait-late=PAYLOAD@NODE  on NODE, the confirmation of the QoS 1/2
//	                      publish whose payload is PAYLOAD, forwarded to
//	                      another node, begins only once a later publish
//	                      to its topic was forwarded (to a node that took
//	                      a session meanwhile, say), at most until a
//	                      second before its forward_timeout: as a
//	                      publisher's output held up by an earlier
//	                      message's confirmation from a node whose
//	                      acknowledgements waited for a partition
//	                      stream's election (test/jepsen TestClusterFull
//	                      seed 221: n3's pub1#139, out to n1 when n1 was
//	                      killed, its confirmation begun 4.7 s later)
//
// Every node of a test inherits the variable; each takes the faults that
// name it.
const faultEnv = "ROOST_TEST_FAULT"

// faults are the injected faults (see faultEnv); nil for none.
type faults struct {
	stallInbound       string
	stopOps            string
	opsStopped         atomic.Bool // stop-ops: its op came
	stallQueue         string
	servedUnclaimed    string      // served-unclaimed
	servedUnclaimedLog atomic.Bool // served-unclaimed: logged
	servedSilent       string      // served-silent
	servedSilenced     atomic.Bool // served-silent: its claim was left unanswered
	servedLate         string      // served-late
	queueLate          string      // queue-late
	queueLateDone      atomic.Bool // queue-late: its op was held
	readLate           string
	orphansSeen        atomic.Bool // read-late: orphan interest was kept once
	delayRelease       string
	unanswered         atomic.Int64  // hold-unanswered: holds left to fail
	silent             atomic.Int64  // hold-silent: holds left unanswered
	holdAnswerLate     time.Duration // hold-answer-late
	holdElect          time.Duration // hold-elect
	electUntil         sync.Map      // hold-elect: dropped node -> the end of its window (time.Time)
	noQuorum           string
	quorumBack         atomic.Bool // no-quorum: the read came
	opsLate            string
	opsFree            atomic.Bool // ops-late: the id was given up here
	opsHeld            atomic.Bool // ops-late: an op was held back once
	opsAfterLost       string
	opsLostFree        atomic.Bool // ops-after-lost: its ops went out
	opsAfterKeep       string
	keepOffline        atomic.Bool  // ops-after-keep: the session went offline
	keepFirst          atomic.Int64 // ops-after-keep: the first kept message (Unix ns)
	keepFree           atomic.Bool  // ops-after-keep: its ops went out
	opsLostIn          atomic.Bool  // ops-after-lost: and were all acknowledged
	heldPending        []string
	releaseLate        string
	answerLate         string
	heldFenced         string
	finishLate         string
	finishSlow         string
	rejoined           chan struct{} // finish-late: closed once a dropped node was heard again
	rejoinOnce         sync.Once
	fenceDone          chan struct{} // held-fenced: closed once the fence ended the session
	fenceOnce          sync.Once
	overtaken          string
	recordSeen         chan struct{} // overtaken: closed once the record came
	recordOnce         sync.Once
	adoptLate          string
	leftUnadopted      string
	adoptWait          []string
	adoptWaitFor       time.Duration // adopt-wait-for: 0 for adoptWait
	settleWait         time.Duration
	ownersLate         time.Duration
	streamsLate        time.Duration
	dropMute           time.Duration
	passOnLate         time.Duration
	missedLate         time.Duration
	heldLagFor         string
	moveLingerFor      time.Duration
	mutedUntil         atomic.Int64 // drop-unannounced: Unix ns
	heldLate           time.Duration
	heldLeaderless     time.Duration
	holdPaced          string
	pacedLanding       time.Duration // hold-paced's DURATION: 0 for none
	landingSaid        atomic.Bool   // hold-paced: a late landing logged
	rejoinedAt         atomic.Int64  // hold-paced: when NODE last heard PEER join (Unix ns)
	pacedSaid          atomic.Bool   // hold-paced: logged
	endsAtReturn       atomic.Int64  // held-end-at-return: catch-ups left
	fetchLost          atomic.Int64  // held-fetch-lost: messages left to lose
	returnedAt         atomic.Int64  // held-end-at-return: when NODE last found itself back (Unix ns)
	oneByOne           atomic.Bool   // held-end-at-return: the catch-up reads one message a batch
	leaderlessUntil    atomic.Int64  // held-leaderless: until when (Unix ns), set at the return
	adoptStall         []string
	moveLate           string
	finishAsked        []string
	finishAskedFor     time.Duration // finish-asked-for; 0: moveLateMax
	finishGone         string
	handedLate         string
	goneLate           string
	unroutedAt         atomic.Int64  // gone-late: when PEER was first found unrouted (Unix ns)
	caughtSince        atomic.Bool   // gone-late: a session caught up here since
	asked              chan struct{} // move-late, finish-asked: closed once a release request came
	askedOnce          sync.Once
	moveCut            string
	registerLate       string
	adoptedSlow        string
	sealLate           string
	answered           chan struct{} // move-cut: closed once a release request was answered
	answeredOnce       sync.Once
	janitorLate        string
	jAsked             chan struct{} // janitor-late: closed once a release request came
	jAskedOnce         sync.Once
	interestLate       string
	beatBacklog        string
	stallFound         atomic.Int64     // beat-backlog: when the expiry loop last found a stall (Unix ns)
	lateCtl            chan lateControl // interest-late: PEER's messages, in order
	lateOnce           sync.Once
	unconfirmed        string
	unconfirmd         atomic.Bool // unconfirmed: its publish came
	straddle           string
	straddled          atomic.Bool   // straddle-move: its publish came
	moveBegun          chan struct{} // straddle-move: closed once a move in began
	begunOnce          sync.Once
	heldStall          string
	heldUntilLost      string
	adoptOpsLate       string
	adoptOpsMu         sync.Mutex
	adoptOpsArmed      bool     // adopt-ops-late: the first rollup came
	adoptOpsFreed      bool     // adopt-ops-late: a later claim read the stream
	adoptOpsHeld       []lateOp // adopt-ops-late: the ops held, in order
	adoptOpsBounded    bool     // adopt-ops-late: the hold's bound is set (adoptOpsLateMax)
	lostOnce           sync.Map // held-until-lost: the followers that logged their read after the loss
	ownUnreached       string
	stallOnce          sync.Map // held-stall: the followers that logged their stall
	sealAnswered       string
	finishRecord       string
	newerSeen          chan struct{} // finish-record: closed once the watcher saw a newer record
	newerOnce          sync.Once
	newerWaits         atomic.Bool // finish-record: its move waits
	connectUnconfirmed string
	connectUnconfirmd  atomic.Bool // connect-unconfirmed: its claim came
	nameOwn            string
	opsOffline         bool        // ops-offline-lost: ops-after-lost once armed
	opsArmed           atomic.Bool // ops-offline-lost: CLIENT's session went offline here
	opsKept            atomic.Bool // ops-offline-lost: its disowned copy here kept a message
	opsTimed           bool        // ops-offline-timed: opsTimedAfterLost once armed, not the keep
	landFirst          string
	landArmed          atomic.Bool // land-before-fence: CLIENT's session went offline here
	landSeen           atomic.Bool // land-before-fence: a claim's record came
	landFree           atomic.Bool // land-before-fence: the held ops go out
	landFreed          atomic.Bool // land-before-fence: their release logged
	landDone           atomic.Bool // land-before-fence: they landed; the record is acted on

	// claim-unconfirmed, and whether its claim came
	claimUnconfirmed string
	claimUnconfirmd  atomic.Bool
	confirmLate      string
	claimLate        string
	claimedLate      atomic.Bool  // claim-late: its claim came
	claimFails       atomic.Int64 // claim-unanswered: claims left to fail
	aheadUnanswered  string
	aheadFailed      atomic.Bool // ahead-unanswered: a claim failed (logged)
	rollupLost       string
	rollupDropped    atomic.Bool // rollup-lost: its rollup was dropped once
	opsAfterRollup   string
	rollupAcked      atomic.Bool // ops-after-rollup: its rollup was acknowledged
	rollupPaused     atomic.Bool // ops-after-rollup: its append was held
	afterRollupSaid  atomic.Bool // ops-after-rollup: its hold was logged
	heldEmpty        time.Duration
	heldEmptyOnce    sync.Once
	heldEmptyUntil   atomic.Int64 // held-empty: until when (Unix nanoseconds), set at the first read
	stepsLate        string
	stepsUntil       atomic.Int64 // steps-late: when the takeover may go on (Unix ns), set at the first disown
	waitLate         string
	waitLateTopic    atomic.Pointer[string] // wait-late: its publish's topic, once it came
	forwardedLater   chan struct{}          // wait-late: closed once a later publish to the topic was forwarded
	forwardedOnce    sync.Once

	// queued-leaderless, and its first claim's time (Unix ns).
	queuedLeaderless string
	queuedLeaderFrom atomic.Int64
}

// claimLateMax bounds claim-late's wait for the session to leave.
const claimLateMax = 60 * time.Second

// straddleMax bounds straddle-move's wait for a move; straddleLinger is
// how long the publish waits after the move began: the move's first step
// comes within it unless the publish holds it back.
const (
	straddleMax    = 60 * time.Second
	straddleLinger = 200 * time.Millisecond
)

// interestLate is how long interest-late holds a peer's control messages.
const interestLate = 1500 * time.Millisecond

// lateControl is a control message interest-late holds, with when it came.
type lateControl struct {
	data []byte
	came time.Time
}

// adoptWait is how long adopt-wait holds an adoption, unless
// adopt-wait-for says otherwise (adoptWaitMax at most).
const adoptWait, adoptWaitMax = 3 * time.Second, time.Minute

// adoptStallMax bounds adopt-stall's wait: past any test's kill.
const adoptStallMax = 60 * time.Second

// moveLateMax bounds move-late's wait.
const moveLateMax = 60 * time.Second

// adoptLateMax bounds adopt-late's wait.
const adoptLateMax = 60 * time.Second

// janitorLateAfter is how long janitor-late's held reads wait after the
// release request: past the answer's wait for them (heldWaitMax).
// janitorLateMax bounds the whole wait.
const (
	janitorLateAfter = heldWaitMax + time.Second
	janitorLateMax   = 60 * time.Second
)

// overtakenWait bounds overtaken's wait for the newer record.
const overtakenWait = 20 * time.Second

// releaseDelay is how long delay-release holds a release request: past
// fenceGrace, after which a fenced session has ended on its node.
const releaseDelay = fenceGrace + time.Second

// knownFaults are the faults faultEnv may name.
var knownFaults = []string{"stall-inbound", "stop-ops", "stall-queue", "served-unclaimed", "served-silent", "queued-leaderless", "served-late", "queue-late", "read-late", "delay-release", "hold-unanswered", "hold-answer-late", "hold-elect", "hold-silent", "no-quorum", "held-pending",
	"release-late", "held-fenced", "overtaken", "adopt-late", "adopt-wait", "adopt-wait-for", "settle-wait", "move-late", "finish-asked", "finish-asked-for", "move-cut", "seal-late", "seal-answered", "finish-record", "connect-unconfirmed", "finish-gone", "straddle-move", "finish-late",
	"interest-late", "ops-late", "unconfirmed", "held-late", "janitor-late", "adopt-stall", "claim-unconfirmed",
	"held-stall", "held-until-lost", "adopt-ops-late", "confirm-late", "claim-late", "claim-unanswered", "ahead-unanswered", "owners-late", "streams-late", "rollup-lost", "held-empty",
	"drop-unannounced", "ops-after-lost", "passon-late", "missed-late", "held-lag", "move-linger", "ops-after-rollup", "steps-late", "ops-after-keep", "finish-slow", "name-own-always", "ops-offline-lost", "ops-offline-timed",
	"land-before-fence", "handed-late", "own-held-unreached", "gone-late", "answer-late", "wait-late", "adopted-slow", "left-unadopted",
	"held-leaderless", "hold-paced", "held-end-at-return", "held-fetch-lost", "beat-backlog", "register-late"}

// parseFaults reads faultEnv's value for node; nil for none.
func parseFaults(s, node string) (*faults, error) {
	if s == "" {
		return nil, nil
	}
	var f *faults
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		v, at, _ := strings.Cut(v, "@")
		if !slices.Contains(knownFaults, k) {
			return nil, fmt.Errorf("%s: unknown fault %q", faultEnv, k)
		}
		if at != node {
			continue
		}
		if f == nil {
			f = &faults{}
		}
		switch k {
		case "stall-inbound":
			f.stallInbound = v
		case "stop-ops":
			f.stopOps = v
		case "stall-queue":
			f.stallQueue = v
		case "served-unclaimed":
			f.servedUnclaimed = v
		case "served-silent":
			f.servedSilent = v
		case "queued-leaderless":
			f.queuedLeaderless = v
		case "served-late":
			f.servedLate = v
		case "queue-late":
			f.queueLate = v
		case "read-late":
			f.readLate = v
		case "no-quorum":
			f.noQuorum = v
		case "ops-late":
			f.opsLate = v
		case "ops-after-lost":
			f.opsAfterLost = v
		case "ops-after-keep":
			f.opsAfterKeep = v
		case "ops-offline-lost":
			f.opsAfterLost, f.opsOffline = v, true
		case "ops-offline-timed":
			f.opsAfterLost, f.opsOffline, f.opsTimed = v, true, true
		case "land-before-fence":
			f.landFirst = v
		case "adopt-late":
			f.adoptLate = v
		case "left-unadopted":
			f.leftUnadopted = v
		case "adopt-wait":
			f.adoptWait = append(f.adoptWait, v)
		case "adopt-stall":
			f.adoptStall = append(f.adoptStall, v)
		case "move-late":
			f.moveLate = v
			if f.asked == nil {
				f.asked = make(chan struct{})
			}
		case "finish-gone":
			f.finishGone = v
		case "handed-late":
			f.handedLate = v
		case "gone-late":
			f.goneLate = v
		case "seal-late":
			f.sealLate = v
		case "finish-record":
			f.finishRecord, f.newerSeen = v, make(chan struct{})
		case "connect-unconfirmed":
			f.connectUnconfirmed = v
		case "seal-answered":
			f.sealAnswered = v
			if f.answered == nil {
				f.answered = make(chan struct{})
			}
		case "adopted-slow":
			f.adoptedSlow = v
			if f.answered == nil {
				f.answered = make(chan struct{})
			}
		case "move-cut":
			f.moveCut = v
			if f.answered == nil {
				f.answered = make(chan struct{})
			}
		case "register-late":
			f.registerLate = v
			if f.answered == nil {
				f.answered = make(chan struct{})
			}
		case "finish-asked-for":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 || d > moveLateMax {
				return nil, fmt.Errorf("%s: finish-asked-for=%q: want a duration up to %s", faultEnv, v, moveLateMax)
			}
			f.finishAskedFor = d
		case "finish-asked":
			f.finishAsked = append(f.finishAsked, v)
			if f.asked == nil {
				f.asked = make(chan struct{})
			}
		case "janitor-late":
			f.janitorLate, f.jAsked = v, make(chan struct{})
		case "unconfirmed":
			f.unconfirmed = v
		case "claim-unconfirmed":
			f.claimUnconfirmed = v
		case "confirm-late":
			f.confirmLate = v
		case "claim-late":
			f.claimLate = v
		case "rollup-lost":
			f.rollupLost = v
		case "steps-late":
			f.stepsLate = v
		case "ops-after-rollup":
			f.opsAfterRollup = v
		case "claim-unanswered":
			count, err := strconv.Atoi(v)
			if err != nil || count < 1 {
				return nil, fmt.Errorf("%s: claim-unanswered=%q: want a count of at least 1", faultEnv, v)
			}
			f.claimFails.Store(int64(count))
		case "ahead-unanswered":
			f.aheadUnanswered = v
		case "straddle-move":
			f.straddle, f.moveBegun = v, make(chan struct{})
		case "wait-late":
			f.waitLate, f.forwardedLater = v, make(chan struct{})
		case "interest-late":
			f.interestLate, f.lateCtl = v, make(chan lateControl, 4096)
		case "beat-backlog":
			f.beatBacklog = v
		case "settle-wait":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("%s: settle-wait=%q: want a duration", faultEnv, v)
			}
			f.settleWait = d
		case "held-empty":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("%s: held-empty=%q: want a duration", faultEnv, v)
			}
			f.heldEmpty = d
		case "adopt-wait-for":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 || d > adoptWaitMax {
				return nil, fmt.Errorf("%s: adopt-wait-for=%q: want a duration up to %s", faultEnv, v, adoptWaitMax)
			}
			f.adoptWaitFor = d
		case "owners-late":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("%s: owners-late=%q: want a duration", faultEnv, v)
			}
			f.ownersLate = d
		case "streams-late":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("%s: streams-late=%q: want a duration", faultEnv, v)
			}
			f.streamsLate = d
		case "drop-unannounced":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 || d > dropMuteMax {
				return nil, fmt.Errorf("%s: drop-unannounced=%q: want a duration up to %v", faultEnv, v, dropMuteMax)
			}
			f.dropMute = d
		case "passon-late":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 || d > passOnLateMax {
				return nil, fmt.Errorf("%s: passon-late=%q: want a duration up to %v", faultEnv, v, passOnLateMax)
			}
			f.passOnLate = d
		case "held-lag":
			f.heldLagFor = v
		case "missed-late":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 || d > passOnLateMax {
				return nil, fmt.Errorf("%s: missed-late=%q: want a duration up to %v", faultEnv, v, passOnLateMax)
			}
			f.missedLate = d
		case "move-linger":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 || d > moveLingerMax {
				return nil, fmt.Errorf("%s: move-linger=%q: want a duration up to %v", faultEnv, v, moveLingerMax)
			}
			f.moveLingerFor = d
		case "held-late":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("%s: held-late=%q: want a duration", faultEnv, v)
			}
			f.heldLate = d
		case "held-leaderless":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("%s: held-leaderless=%q: want a duration", faultEnv, v)
			}
			f.heldLeaderless = d
		case "hold-paced":
			peer, land, ok := strings.Cut(v, "/")
			f.holdPaced = peer
			if ok {
				d, err := time.ParseDuration(land)
				if err != nil || d <= 0 {
					return nil, fmt.Errorf("%s: hold-paced=%q: want PEER or PEER/DURATION", faultEnv, v)
				}
				f.pacedLanding = d
			}
		case "held-fetch-lost":
			count, err := strconv.Atoi(v)
			if err != nil || count < 1 {
				return nil, fmt.Errorf("%s: held-fetch-lost=%q: want a count of at least 1", faultEnv, v)
			}
			f.fetchLost.Store(int64(count))
		case "held-end-at-return":
			count, err := strconv.Atoi(v)
			if err != nil || count < 1 {
				return nil, fmt.Errorf("%s: held-end-at-return=%q: want a count of at least 1", faultEnv, v)
			}
			f.endsAtReturn.Store(int64(count))
		case "held-pending":
			f.heldPending = append(f.heldPending, v)
		case "name-own-always":
			f.nameOwn = v
		case "held-stall":
			f.heldStall = v
		case "held-until-lost":
			f.heldUntilLost = v
		case "adopt-ops-late":
			f.adoptOpsLate = v
		case "own-held-unreached":
			f.ownUnreached = v
		case "release-late":
			f.releaseLate = v
		case "answer-late":
			f.answerLate = v
		case "finish-late":
			f.finishLate, f.rejoined = v, make(chan struct{})
		case "finish-slow":
			f.finishSlow = v
		case "held-fenced":
			f.heldFenced, f.fenceDone = v, make(chan struct{})
		case "overtaken":
			f.overtaken, f.recordSeen = v, make(chan struct{})
		case "hold-unanswered":
			count, err := strconv.Atoi(v)
			if err != nil || count < 1 {
				return nil, fmt.Errorf("%s: hold-unanswered=%q: want a count of at least 1", faultEnv, v)
			}
			f.unanswered.Store(int64(count))
		case "hold-answer-late":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("%s: hold-answer-late=%q: want a duration", faultEnv, v)
			}
			f.holdAnswerLate = d
		case "hold-elect":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 || d > holdElectMax {
				return nil, fmt.Errorf("%s: hold-elect=%q: want a duration up to %s", faultEnv, v, holdElectMax)
			}
			f.holdElect = d
		case "hold-silent":
			count, err := strconv.Atoi(v)
			if err != nil || count < 1 {
				return nil, fmt.Errorf("%s: hold-silent=%q: want a count of at least 1", faultEnv, v)
			}
			f.silent.Store(int64(count))
		default:
			f.delayRelease = v
		}
	}
	return f, nil
}

// delays reports whether a claim of id waits releaseDelay before its
// release request.
func (f *faults) delays(id string) bool {
	return f != nil && f.delayRelease == id
}

// ownHeldUnreached reports whether the follower of this node's own held
// subject is not to reach its consumer (own-held-unreached): while the
// named session is here (has).
func (f *faults) ownHeldUnreached(has func(string) bool) bool {
	return f != nil && f.ownUnreached != "" && has(f.ownUnreached)
}

// stallsFollower reports whether the follower of node's held subject,
// which follows ids, is not to read (held-stall), and whether this is its
// first such report (logged once).
func (f *faults) stallsFollower(node string, ids []string) (stall, first bool) {
	if f == nil || f.heldStall == "" || !slices.Contains(ids, f.heldStall) {
		return false, false
	}
	_, logged := f.stallOnce.LoadOrStore(node, true)
	return true, !logged
}

// stallsUntilLost is stallsFollower for held-until-lost: the follower
// of node's held subject, which follows ids, does not read while its
// CLIENT is among them and not lost here (lost: sessions.lostHere);
// first says this is its first stall, after the first read once lost.
func (f *faults) stallsUntilLost(node string, ids []string, lost func(string) bool) (stall, first, after bool) {
	if f == nil || f.heldUntilLost == "" || !slices.Contains(ids, f.heldUntilLost) {
		return false, false, false
	}
	if lost(f.heldUntilLost) {
		_, logged := f.lostOnce.LoadOrStore(node, true)
		return false, false, !logged
	}
	_, logged := f.stallOnce.LoadOrStore(node, true)
	return true, !logged, false
}

// stepsLate is how long steps-late leaves a disowned session's connection
// to its client: long enough for a few packets each way on a loaded
// machine, short enough for the release answer to come within the
// claimer's releaseTimeout.
const stepsLate = 1500 * time.Millisecond

// takeoverLate returns how long the takeover of id's connection, its
// session disowned here just now, waits (steps-late): until stepsLate
// after the first disown of id, so that a fence and a release answer of
// the same claim wait for the same instant.
func (f *faults) takeoverLate(id string) time.Duration {
	if f == nil || f.stepsLate != id {
		return 0
	}
	f.stepsUntil.CompareAndSwap(0, time.Now().Add(stepsLate).UnixNano())
	return time.Until(time.Unix(0, f.stepsUntil.Load()))
}

// holdsHeld reports whether a release request for id is to find its held
// messages pending, and the owner watcher is not to fence id
// (held-pending).
func (f *faults) holdsHeld(id string) bool {
	return f != nil && slices.Contains(f.heldPending, id)
}

// namesOwn reports whether a live handover of id names this node's own
// held subject for the new owner whether or not the others may have held
// for this node, and whether or not its follower is behind
// (name-own-always).
func (f *faults) namesOwn(id string) bool {
	return f != nil && f.nameOwn == id
}

// handlesLate reports whether a release request for id is handled
// heldWaitMax late (release-late).
func (f *faults) handlesLate(id string) bool {
	return f != nil && f.releaseLate == id
}

// answersLate reports whether a release request for id that took no
// unread mark answers only at its held waits' bound (answer-late).
func (f *faults) answersLate(id string) bool {
	return f != nil && f.answerLate == id
}

// fenced notes that a fence ended id's session (held-fenced).
func (f *faults) fenced(id string) {
	if f != nil && f.heldFenced == id {
		f.fenceOnce.Do(func() { close(f.fenceDone) })
	}
}

// finishLate and finishLateMax: finish-late's wait after a dropped node
// was heard again, and its bound.
const (
	finishLate    = time.Second
	finishLateMax = 60 * time.Second
)

// heardAgain notes that a node this node had dropped was heard again
// (finish-late).
func (f *faults) heardAgain() {
	if f != nil && f.finishLate != "" {
		f.rejoinOnce.Do(func() { close(f.rejoined) })
	}
}

// finishesLate reports whether a live move of id here asks for its finish
// late (finish-late).
func (f *faults) finishesLate(id string) bool {
	return f != nil && f.finishLate == id
}

// finishSlow is how long finish-slow holds a move's finish: well within
// the forward timeout its held messages' confirmations wait under.
const finishSlow = 1500 * time.Millisecond

// finishesSlow reports whether a live move of id here asks for its finish
// finishSlow late (finish-slow).
func (f *faults) finishesSlow(id string) bool {
	return f != nil && f.finishSlow == id
}

// awaitRejoined waits, for finish-late, until heardAgain and finishLate
// after it, or finishLateMax.
func (f *faults) awaitRejoined() {
	select {
	case <-f.rejoined:
		time.Sleep(finishLate)
	case <-time.After(finishLateMax):
	}
}

// holdsUntilFenced reports whether a release request for id that found
// no unread mark waits for a fence (held-fenced).
func (f *faults) holdsUntilFenced(id string) bool {
	return f != nil && f.heldFenced == id
}

// awaitFence waits, for held-fenced, until fenced or by.
func (f *faults) awaitFence(by time.Time) {
	t := time.NewTimer(time.Until(by))
	defer t.Stop()
	select {
	case <-f.fenceDone:
	case <-t.C:
	}
}

// sawRecord notes that the owner watcher saw a record of id naming
// another node (overtaken).
func (f *faults) sawRecord(id string) {
	if f != nil && f.overtaken == id {
		f.recordOnce.Do(func() { close(f.recordSeen) })
	}
}

// overtakes reports whether a claim's adoption of id is to wait for a
// newer record (overtaken).
func (f *faults) overtakes(id string) bool {
	return f != nil && f.overtaken == id
}

// awaitRecord waits, for overtaken's id, until sawRecord or
// overtakenWait.
func (f *faults) awaitRecord(id string) {
	if !f.overtakes(id) {
		return
	}
	select {
	case <-f.recordSeen:
	case <-time.After(overtakenWait):
	}
}

// leavesUnadopted reports whether left-unadopted names id here.
func (f *faults) leavesUnadopted(id string) bool {
	return f != nil && f.leftUnadopted == id
}

// adoptsLate reports whether a claim of id waits before its adoption
// (adopt-late).
func (f *faults) adoptsLate(id string) bool {
	return f != nil && f.adoptLate == id
}

// waitsToAdopt reports whether a claim's adoption of id waits adoptWait
// after its read ahead (adopt-wait).
func (f *faults) waitsToAdopt(id string) bool {
	return f != nil && slices.Contains(f.adoptWait, id)
}

// adoptWaitLength is how long adopt-wait holds an adoption.
func (f *faults) adoptWaitLength() time.Duration {
	if f == nil || f.adoptWaitFor == 0 {
		return adoptWait
	}
	return f.adoptWaitFor
}

// stallsAdoption reports whether a claim of id waits, once answered,
// before it takes the session (adopt-stall).
func (f *faults) stallsAdoption(id string) bool {
	return f != nil && slices.Contains(f.adoptStall, id)
}

// askedRelease notes that a request to let go of id came (move-late,
// finish-asked, janitor-late).
func (f *faults) askedRelease(id string) {
	if f != nil && (f.moveLate == id || slices.Contains(f.finishAsked, id)) {
		f.askedOnce.Do(func() { close(f.asked) })
	}
	if f != nil && f.janitorLate == id {
		f.jAskedOnce.Do(func() { close(f.jAsked) })
	}
}

// janitorLates reports whether the janitor's held reads for ids wait
// (janitor-late: one of them is its client).
func (f *faults) janitorLates(ids []string) bool {
	return f != nil && f.janitorLate != "" && slices.Contains(ids, f.janitorLate)
}

// awaitJanitorAsked waits, for janitor-late, until a release request for
// its client came and janitorLateAfter more, or janitorLateMax in all.
func (f *faults) awaitJanitorAsked() {
	bound := time.After(janitorLateMax)
	select {
	case <-f.jAsked:
	case <-bound:
		return
	}
	select {
	case <-time.After(janitorLateAfter):
	case <-bound:
	}
}

// movesLate reports whether a live move of id here waits before its
// adoption (move-late).
func (f *faults) movesLate(id string) bool {
	return f != nil && f.moveLate == id
}

// finishesAsked reports whether a live move of id here asks for its
// finish only once a newer claim asked for the session (finish-asked).
func (f *faults) finishesAsked(id string) bool {
	return f != nil && slices.Contains(f.finishAsked, id)
}

// movesCut reports whether a live move of id here asks for its finish
// only once a newer claim's release request was answered (move-cut).
func (f *faults) movesCut(id string) bool {
	return f != nil && f.moveCut == id
}

// registersLate reports whether a live move of id here, the previous
// owner's handover taken, registers only once a newer claim's release
// request was answered (register-late): the window in which the gate
// kept the move of test/jepsen TestClusterFull seed 887 unregistered.
func (f *faults) registersLate(id string) bool {
	return f != nil && f.registerLate == id
}

// answeredRelease notes that a release request for id was answered.
func (f *faults) answeredRelease(id string) {
	if f != nil && (f.moveCut == id || f.sealAnswered == id || f.adoptedSlow == id || f.registerLate == id) {
		f.answeredOnce.Do(func() { close(f.answered) })
	}
}

// adoptedSlow is how long adopted-slow holds a move after the newer
// claim's answer: time for a test to publish on the node meanwhile.
const adoptedSlow = 3 * time.Second

// adoptsSlow reports whether a live move of id here waits once adopted
// (adopted-slow).
func (f *faults) adoptsSlow(id string) bool {
	return f != nil && f.adoptedSlow == id
}

// awaitAnswered waits, for move-cut and seal-answered, until
// answeredRelease or moveLateMax.
func (f *faults) awaitAnswered() {
	select {
	case <-f.answered:
	case <-time.After(moveLateMax):
	}
}

// sealsLate reports whether a live move of id here, its adoption begun,
// waits until the node stops (seal-late).
func (f *faults) sealsLate(id string) bool {
	return f != nil && f.sealLate == id
}

// sealsAnswered reports whether a live move of id here, its adoption
// begun, waits until a newer claim's release request was answered
// (seal-answered).
func (f *faults) sealsAnswered(id string) bool {
	return f != nil && f.sealAnswered == id
}

// finishesRecord reports whether a live move of id here asks for its
// finish only once the owner watcher saw a newer record (finish-record).
func (f *faults) finishesRecord(id string) bool {
	return f != nil && f.finishRecord == id
}

// sawNewerRecord notes, for finish-record, that the owner watcher saw a
// record of id naming another node, newer than this node's claim. Only
// once the move waits: the records before its claim are older.
func (f *faults) sawNewerRecord(id string) {
	if f != nil && f.finishRecord == id && f.newerWaits.Load() {
		f.newerOnce.Do(func() { close(f.newerSeen) })
	}
}

// awaitNewerRecord waits, for finish-record, until sawNewerRecord or
// moveLateMax.
func (f *faults) awaitNewerRecord() {
	f.newerWaits.Store(true)
	select {
	case <-f.newerSeen:
	case <-time.After(moveLateMax):
	}
}

// unconfirmsConnect reports whether a CONNECT's claim of id, written, is
// connect-unconfirmed's (the first).
func (f *faults) unconfirmsConnect(id string) bool {
	return f != nil && f.connectUnconfirmed == id && f.connectUnconfirmd.CompareAndSwap(false, true)
}

// finishesGone reports whether a live move of id here asks for its
// finish only once its previous owner is no longer heard from
// (finish-gone).
func (f *faults) finishesGone(id string) bool {
	return f != nil && f.finishGone == id
}

// handsLate reports whether the reads from the places a live move of id
// here was handed wait until id is lost here (handed-late).
func (f *faults) handsLate(id string) bool {
	return f != nil && f.handedLate == id
}

// goneLateMax bounds gone-late's wait: below the forward_timeout of the
// test that uses it, so that the forwards out fail as gone, not timed out.
const goneLateMax = 20 * time.Second

// dropsLate reports whether peer, routed or not at now, is to be kept as
// if routed (gone-late), with catching the sessions catching up here, and
// whether this is the first tick that keeps it (logged once).
func (f *faults) dropsLate(peer string, routed bool, now time.Time, catching int32) (keep, first bool) {
	if f == nil || f.goneLate != peer {
		return false, false
	}
	if routed {
		f.unroutedAt.Store(0)
		f.caughtSince.Store(false)
		return false, false
	}
	first = f.unroutedAt.CompareAndSwap(0, now.UnixNano())
	if now.Sub(time.Unix(0, f.unroutedAt.Load())) >= goneLateMax {
		return false, first
	}
	if catching > 0 {
		f.caughtSince.Store(true)
		return true, first
	}
	return !f.caughtSince.Load(), first
}

// awaitLost waits, for handed-late, until lost says so, ctx ends, or
// moveLateMax.
func (f *faults) awaitLost(ctx context.Context, lost func() bool) {
	for bound := time.Now().Add(moveLateMax); !lost() && time.Now().Before(bound) && ctx.Err() == nil; {
		time.Sleep(20 * time.Millisecond)
	}
}

// awaitGone waits, for finish-gone, until heard says the previous owner
// is no longer heard from, or moveLateMax.
func (f *faults) awaitGone(heard func() bool) {
	for bound := time.Now().Add(moveLateMax); heard() && time.Now().Before(bound); {
		time.Sleep(20 * time.Millisecond)
	}
}

// awaitAsked waits, for move-late's or finish-asked's id, until
// askedRelease or moveLateMax (finish-asked-for's bound if set).
func (f *faults) awaitAsked() {
	bound := moveLateMax
	if f.finishAskedFor > 0 {
		bound = f.finishAskedFor
	}
	select {
	case <-f.asked:
	case <-time.After(bound):
	}
}

// straddles reports whether a publish to name is straddle-move's (the
// first to its topic).
func (f *faults) straddles(name string) bool {
	return f != nil && f.straddle == name && f.straddled.CompareAndSwap(false, true)
}

// unconfirms reports whether a forwarded publish to name is unconfirmed's
// (the first to its topic).
func (f *faults) unconfirms(name string) bool {
	return f != nil && f.unconfirmed == name && f.unconfirmd.CompareAndSwap(false, true)
}

// unconfirmsClaim reports whether the janitor's claim of id, written, is
// claim-unconfirmed's (the first).
func (f *faults) unconfirmsClaim(id string) bool {
	return f != nil && f.claimUnconfirmed == id && f.claimUnconfirmd.CompareAndSwap(false, true)
}

// errFaultClaimUnconfirmed is the confirmation claim-unconfirmed fails.
var errFaultClaimUnconfirmed = errors.New("cluster: test fault: claim not confirmed (claim-unconfirmed)")

// errFaultConnectUnconfirmed is the confirmation connect-unconfirmed
// fails.
var errFaultConnectUnconfirmed = errors.New("cluster: test fault: claim not confirmed (connect-unconfirmed)")

// withholds reports whether the confirmation of a forwarded QoS 2
// message on topic name is never to be sent (confirm-late).
func (f *faults) withholds(name string, qos packet.QoS) bool {
	return f != nil && qos == 2 && f.confirmLate == name
}

// errFaultUnconfirmed is the confirmation unconfirmed fails.
var errFaultUnconfirmed = errors.New("cluster: test fault: not confirmed (unconfirmed)")

// waitsLate reports whether the confirmation of a forwarded publish of
// payload to topic is wait-late's (the first with its payload).
func (f *faults) waitsLate(payload []byte, topic string) bool {
	if f == nil || f.waitLate == "" || f.waitLate != string(payload) {
		return false
	}
	// A copy taken here: &topic made every publish's topic escape, an
	// allocation per publish with no fault set.
	t := topic
	return f.waitLateTopic.CompareAndSwap(nil, &t)
}

// forwardedTo notes a publish to topic forwarded to another node: one
// after wait-late's publish lets its confirmation begin.
func (f *faults) forwardedTo(topic string) {
	if f == nil || f.forwardedLater == nil {
		return
	}
	if p := f.waitLateTopic.Load(); p != nil && *p == topic {
		f.forwardedOnce.Do(func() { close(f.forwardedLater) })
	}
}

// awaitForwardedLater waits, for wait-late's confirmation, until a later
// publish to its topic was forwarded (true) or by passed (false).
func (f *faults) awaitForwardedLater(by time.Time) bool {
	select {
	case <-f.forwardedLater:
		return true
	case <-time.After(time.Until(by)):
		return false
	}
}

// moveBegins notes that a live move into this node begins (straddle-move).
func (f *faults) moveBegins() {
	if f != nil && f.moveBegun != nil {
		f.begunOnce.Do(func() { close(f.moveBegun) })
	}
}

// awaitMove waits, for straddle-move's publish, until moveBegins or
// straddleMax, then straddleLinger.
func (f *faults) awaitMove() {
	select {
	case <-f.moveBegun:
	case <-time.After(straddleMax):
	}
	time.Sleep(straddleLinger)
}

// beatBacklog is how long beat-backlog holds PEER's control messages
// after the stall was found: past the expiry loop's next tick.
const beatBacklog = 300 * time.Millisecond

// foundStall notes that the expiry loop found at at that this node did
// not run for a while (beat-backlog).
func (f *faults) foundStall(at time.Time) {
	if f != nil && f.beatBacklog != "" {
		f.stallFound.Store(at.UnixNano())
	}
}

// awaitBacklog holds a control message of node, for beat-backlog, while
// behind reports that the expiry loop has not run since this node
// resumed, then until beatBacklog after the run that found the stall.
func (f *faults) awaitBacklog(ctx context.Context, node string, behind func() bool) {
	if f == nil || f.beatBacklog != node {
		return
	}
	if behind() {
		for behind() && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		// The loop notes the stall (foundStall) just after its run.
		for i := 0; i < 100 && time.Since(time.Unix(0, f.stallFound.Load())) > time.Second; i++ {
			time.Sleep(time.Millisecond)
		}
	}
	found := time.Unix(0, f.stallFound.Load())
	if d := time.Until(found.Add(beatBacklog)); d > 0 {
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	}
}

// delaysControl reports whether node's control messages are handled
// late here (interest-late).
func (f *faults) delaysControl(node string) bool {
	return f != nil && f.interestLate == node
}

// settleDelay returns how long settle-wait holds the announcement of the
// settled restored sessions' keys; 0 for none.
func (f *faults) settleDelay() time.Duration {
	if f == nil {
		return 0
	}
	return f.settleWait
}

// ownersReadDelay returns how long owners-late holds the read of the
// owner records at start; 0 for none.
func (f *faults) ownersReadDelay() time.Duration {
	if f == nil {
		return 0
	}
	return f.ownersLate
}

// streamsOpenDelay returns how long streams-late holds the opening of
// the session streams at start; 0 for none.
func (f *faults) streamsOpenDelay() time.Duration {
	if f == nil {
		return 0
	}
	return f.streamsLate
}

// passOnLateMax bounds passon-late: within every forward's deadline
// (forward_timeout), so the publisher's confirmation still comes.
const passOnLateMax = time.Second

// passOnDelay returns how long passon-late holds a pass-on back; 0 for
// none.
func (f *faults) passOnDelay() time.Duration {
	if f == nil {
		return 0
	}
	return f.passOnLate
}

// missedDelay returns how long missed-late holds a held message's pass-on
// to a moved member's new owner back; 0 for none.
func (f *faults) missedDelay() time.Duration {
	if f == nil {
		return 0
	}
	return f.missedLate
}

// heldLag is held-lag's lag behind a held message's store.
const heldLag = 150 * time.Millisecond

// heldLagged returns when held-lag has a read of a held subject for ids
// deliver a message stored at stored; the zero time for at once.
func (f *faults) heldLagged(ids []string, stored time.Time) time.Time {
	if f == nil || f.heldLagFor == "" || !slices.Contains(ids, f.heldLagFor) {
		return time.Time{}
	}
	return stored.Add(heldLag)
}

// moveLingerMax bounds move-linger.
const moveLingerMax = time.Minute

// movedLinger returns how long move-linger keeps a live move out's share
// groups; 0 for moveLinger.
func (f *faults) movedLinger() time.Duration {
	if f == nil {
		return 0
	}
	return f.moveLingerFor
}

// dropMuteMax bounds drop-unannounced: a node silent for deadAfter is
// dropped by the others.
const dropMuteMax = 3 * time.Second

// droppedRestored is drop-unannounced's start: n dropped restored
// sessions owned elsewhere.
func (f *faults) droppedRestored(n *Node) {
	if f == nil || f.dropMute == 0 {
		return
	}
	n.log.Info("cluster: test fault: interest changes and heartbeats held back after a restored session's drop", "for", f.dropMute)
	f.mutedUntil.Store(time.Now().Add(f.dropMute).UnixNano())
}

// muted reports whether drop-unannounced holds the interest messages
// back now.
func (f *faults) muted() bool {
	return f != nil && time.Now().UnixNano() < f.mutedUntil.Load()
}

// claimedFor is claim-late's wait: chosen are the members a held
// message's groups were claimed for here (claimGroups). The first claim
// for the fault's client waits until the session left n's server.
func (f *faults) claimedFor(n *Node, chosen map[string]string) {
	if f == nil || f.claimLate == "" {
		return
	}
	id := f.claimLate
	var named bool
	for _, c := range chosen {
		named = named || c == id
	}
	if !named || !f.claimedLate.CompareAndSwap(false, true) {
		return
	}
	n.log.Info("cluster: fault claim-late: held message claimed; delivering once the session left", "client_id", id)
	for deadline := time.Now().Add(claimLateMax); time.Now().Before(deadline) && n.ctx.Err() == nil; {
		if _, _, ok := n.srv.Client(id); !ok {
			n.log.Info("cluster: fault claim-late: the session left; delivering", "client_id", id)
			return
		}
		select {
		case <-n.ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// claimUnanswered returns the error claim-unanswered gives a group claim
// instead of appending it; nil: the claim is to be appended.
func (f *faults) claimUnanswered() error {
	if f == nil || f.claimFails.Add(-1) < 0 {
		return nil
	}
	return jetstream.ErrNoStreamResponse
}

// aheadClaimUnanswered returns the error ahead-unanswered gives the
// share group claim that a read ahead for id's session on n would make
// now, for a held message of groups of which the session is a member
// (members, by "$share/group/filter"); nil: the claim is to be made.
func (f *faults) aheadClaimUnanswered(n *Node, id string, groups []string, members map[string]bool) error {
	if f == nil || f.aheadUnanswered != id {
		return nil
	}
	for _, gk := range groups {
		group, filter, _ := strings.Cut(gk, "\x00")
		if !members["$share/"+group+"/"+filter] {
			continue
		}
		if !f.aheadFailed.Swap(true) {
			n.log.Info("cluster: test fault: a read ahead's share group claim unanswered", "client_id", id, "group", group)
		}
		return fmt.Errorf("%w %q: %w", errClaim, group, jetstream.ErrNoStreamResponse)
	}
	return nil
}

// heldReadEmpty reports whether held-empty has this read of the node's
// own held follower come back empty, without asking the server; it
// returns after heldEmptyPause (or once done is closed). first says it
// is the fault's first read, for the log.
func (f *faults) heldReadEmpty(done <-chan struct{}) (empty, first bool) {
	if f == nil || f.heldEmpty == 0 {
		return false, false
	}
	f.heldEmptyOnce.Do(func() {
		f.heldEmptyUntil.Store(time.Now().Add(f.heldEmpty).UnixNano())
		first = true
	})
	if time.Now().UnixNano() >= f.heldEmptyUntil.Load() {
		return false, false
	}
	select {
	case <-done:
	case <-time.After(heldEmptyPause):
	}
	return true, first
}

// heldEmptyPause is how long a read held-empty answers takes: shorter
// than the second an unanswered FetchNoWait takes, so that a follower
// that takes it for the end gets there within the test's window.
const heldEmptyPause = 200 * time.Millisecond

// returned starts held-leaderless's window, and notes for
// held-end-at-return when the node found itself back from a silence.
func (f *faults) returned(back time.Time) {
	if f == nil {
		return
	}
	f.returnedAt.Store(back.UnixNano())
	if f.heldLeaderless != 0 {
		f.leaderlessUntil.Store(back.Add(f.heldLeaderless).UnixNano())
	}
}

// errHeldLeaderless is what held-leaderless fails the follower with: the
// error JetStream answered it with in the runs the fault stands for.
var errHeldLeaderless = errors.New("test fault: held-leaderless: JetStream system temporarily unavailable")

// heldLeaderlessErr returns the error held-leaderless fails this attempt
// of the node's own held follower with; nil outside its window.
func (f *faults) heldLeaderlessErr() error {
	if f == nil || f.heldLeaderless == 0 || time.Now().UnixNano() >= f.leaderlessUntil.Load() {
		return nil
	}
	return errHeldLeaderless
}

// heldFetchLost reports whether held-fetch-lost has the follower of this
// node's own held subject lose this message, read while it drains.
func (f *faults) heldFetchLost() bool {
	return f != nil && f.fetchLost.Add(-1) >= 0
}

// ownHeldLate returns how long after it was held held-late has this
// node's own follower apply a message; 0 without the fault.
func (f *faults) ownHeldLate() time.Duration {
	if f == nil {
		return 0
	}
	return f.heldLate
}

// leavesServed reports whether a first routing of publisher id's message,
// served to members, is to claim none of its served groups
// (served-unclaimed); first is true the first time.
func (f *faults) leavesServed(id string, members []string) (leave, first bool) {
	if f == nil || f.servedUnclaimed == "" || id != f.servedUnclaimed && !slices.Contains(members, f.servedUnclaimed) {
		return false, false
	}
	return true, f.servedUnclaimedLog.CompareAndSwap(false, true)
}

// servedLateDelay is how long served-late holds a first routing's
// claims: longer than a test's wait for the member's delivery before it
// kills the node.
const servedLateDelay = 20 * time.Second

// delaysServed returns how long a first routing of publisher id's
// message, served to members, waits before its claims (served-late); 0
// without the fault.
func (f *faults) delaysServed(id string, members []string) time.Duration {
	if f == nil || f.servedLate == "" || id != f.servedLate && !slices.Contains(members, f.servedLate) {
		return 0
	}
	return servedLateDelay
}

// queueLateDelay is how long queue-late holds its op: past forward_timeout
// in its test (4 s), within claimSettleBound (three of them).
const queueLateDelay = 8 * time.Second

// lateOp is an op held back by adopt-ops-late, with its queue entry but
// the body and message id (sessions.sendLate).
type lateOp struct {
	op   broker.Op
	mark repOp
}

// holdsAdoptOp reports whether op (rollup: an adoption's first) is
// adopt-ops-late's, to be held (holdAdoptOp) until releaseAdoptOps.
func (f *faults) holdsAdoptOp(op *broker.Op, rollup bool) bool {
	if f == nil || f.adoptOpsLate == "" || op.ClientID != f.adoptOpsLate {
		return false
	}
	f.adoptOpsMu.Lock()
	defer f.adoptOpsMu.Unlock()
	if rollup && !f.adoptOpsFreed {
		f.adoptOpsArmed = true
	}
	return f.adoptOpsArmed && !f.adoptOpsFreed
}

// holdAdoptOp keeps op for releaseAdoptOps and reports whether it is the
// first op held (its caller then bounds the hold: adoptOpsLateMax).
func (f *faults) holdAdoptOp(op lateOp) (first bool) {
	f.adoptOpsMu.Lock()
	defer f.adoptOpsMu.Unlock()
	first = !f.adoptOpsBounded
	f.adoptOpsBounded = true
	f.adoptOpsHeld = append(f.adoptOpsHeld, op)
	return first
}

// adoptOpsLateMax bounds adopt-ops-late's hold. The hold arms at the
// first adoption rollup that reaches the queue: when the first adoption's
// ops stay local (its copy disowned just before: keep.go), that is the
// resume's own adoption, whose ops nothing then freed, and every op of
// the node stayed unconfirmed, each CONNACK there refused (0x80), until
// the test's end (a fresh clone's TestReproWatchReplacedCopy, session 26,
// "not within 1m0s: CONNACK 0x80", n2 refusing wr-sub's resumes for "a
// test fault's stalled op"; reproduced in session 27 with the logs).
// Ops whose stream has no leader land when it has one again.
const adoptOpsLateMax = 30 * time.Second

// releaseAdoptOps ends adopt-ops-late's hold of id's ops, a claim of id
// having read the stream, and returns them in order (none the second
// time, or when none were held).
func (f *faults) releaseAdoptOps(id string) []lateOp {
	if f == nil || f.adoptOpsLate != id {
		return nil
	}
	f.adoptOpsMu.Lock()
	defer f.adoptOpsMu.Unlock()
	if !f.adoptOpsArmed || f.adoptOpsFreed {
		return nil
	}
	f.adoptOpsFreed = true
	out := f.adoptOpsHeld
	f.adoptOpsHeld = nil
	return out
}

// delaysQueue reports whether op is queue-late's, to be held back
// queueLateDelay.
func (f *faults) delaysQueue(op *broker.Op) bool {
	return f != nil && f.queueLate != "" && op.Kind == broker.OpQueuePut && op.ClientID == f.queueLate &&
		f.queueLateDone.CompareAndSwap(false, true)
}

// servedSilentAfter is when served-silent's claim fails: sooner than the
// real async publish timeout (forward_timeout), so that a test's resend,
// which waits for the publisher's close at forward_timeout, comes after.
const servedSilentAfter = time.Second

// silencesServed returns, for the first served claim of served-silent's
// publisher id, a future for m that fails with
// jetstream.ErrAsyncPublishTimeout after servedSilentAfter, m not
// published; nil otherwise.
func (f *faults) silencesServed(id string, m *nats.Msg) jetstream.PubAckFuture {
	if f == nil || id == "" || id != f.servedSilent || !f.servedSilenced.CompareAndSwap(false, true) {
		return nil
	}
	errs := make(chan error, 1)
	time.AfterFunc(servedSilentAfter, func() { errs <- jetstream.ErrAsyncPublishTimeout })
	return &unansweredHold{msg: m, errs: errs}
}

// queuedLeaderless is how long queued-leaderless's claims fail: past a
// 4-s forward_timeout, the adoption's bound, so the claim goes on after
// the adoption.
const queuedLeaderless = 8 * time.Second

// leaderlessQueued returns, for a claim m of id's queued copy under
// queued-leaderless, a future failing with nats.go's "no response from
// stream" a moment later (first: the fault's first); nil otherwise.
func (f *faults) leaderlessQueued(id string, m *nats.Msg) (fut jetstream.PubAckFuture, first bool) {
	if f == nil || id != f.queuedLeaderless {
		return nil, false
	}
	now := time.Now().UnixNano()
	first = f.queuedLeaderFrom.CompareAndSwap(0, now)
	if time.Duration(now-f.queuedLeaderFrom.Load()) >= queuedLeaderless {
		return nil, false
	}
	errs := make(chan error, 1)
	time.AfterFunc(100*time.Millisecond, func() { errs <- jetstream.ErrNoStreamResponse })
	return &unansweredHold{msg: m, errs: errs}, first
}

// stalls reports whether op is never to be replicated.
func (f *faults) stalls(op *broker.Op) bool {
	if f == nil || op.ClientID == "" {
		return false
	}
	return op.Kind == broker.OpInboundPut && op.ClientID == f.stallInbound ||
		op.Kind == broker.OpQueuePut && op.ClientID == f.stallQueue
}

// stopsOps reports whether op is never to be replicated (stop-ops): it
// queues the named payload, or came after the op that did; first is
// true for that op.
func (f *faults) stopsOps(op *broker.Op) (stop, first bool) {
	if f == nil || f.stopOps == "" {
		return false, false
	}
	if f.opsStopped.Load() {
		return true, false
	}
	if op.Kind != broker.OpQueuePut || op.Delivery.Msg == nil || string(op.Delivery.Msg.Payload) != f.stopOps {
		return false, false
	}
	return true, f.opsStopped.CompareAndSwap(false, true)
}

// readsLate reports whether reading id's session from the stream is to
// fail: until orphan interest (orphans: the nodes kept) was kept and is
// no more.
func (f *faults) readsLate(id string, orphans int32) bool {
	if f == nil || id != f.readLate {
		return false
	}
	if orphans > 0 {
		f.orphansSeen.Store(true)
		return true
	}
	return !f.orphansSeen.Load()
}

// withoutQuorum reports whether the partition stream p takes no ops
// (no-quorum); part is the partition of a client id.
func (f *faults) withoutQuorum(p int, part func(string) int) bool {
	return f != nil && f.noQuorum != "" && !f.quorumBack.Load() && part(f.noQuorum) == p
}

// holdsOps reports whether the partition stream p takes no ops of this
// node now (ops-late): p is the partition of the named client id, which
// this node has not given up yet (freesOps).
func (f *faults) holdsOps(p int, part func(string) int) bool {
	return f != nil && f.opsLate != "" && !f.opsFree.Load() && part(f.opsLate) == p
}

// opsAfterLost is how long ops-after-lost holds ops after the claim
// elsewhere: time for the claimer to complete what the session owed.
const opsAfterLost = 6 * time.Second

// holdsOpsUntilLost reports whether the partition stream p takes no ops
// of this node now (ops-after-lost): p is the partition of the named
// client id, which another node claimed from this one less than
// opsAfterLost ago, or not yet (lostAt reports when). freed is true the
// one time the hold ends.
func (f *faults) holdsOpsUntilLost(p int, part func(string) int, lostAt func(string) (time.Time, bool)) (held, freed bool) {
	if f == nil || f.opsAfterLost == "" || f.opsLostFree.Load() || part(f.opsAfterLost) != p || f.opsOffline && !f.opsArmed.Load() {
		return false, false
	}
	if f.opsOffline && !f.opsTimed {
		if f.opsKept.Load() {
			return false, f.opsLostFree.CompareAndSwap(false, true)
		}
		return true, false
	}
	bound := opsAfterLost
	if f.opsTimed {
		bound = opsTimedAfterLost
	}
	if at, ok := lostAt(f.opsAfterLost); ok && time.Since(at) >= bound {
		return false, f.opsLostFree.CompareAndSwap(false, true)
	}
	return true, false
}

// opsTimedAfterLost is ops-offline-timed's opsAfterLost: past the
// claimer's delay-release (releaseDelay) and its read of the stream.
const opsTimedAfterLost = releaseDelay + 5*time.Second

// heldQueued reports that op queues a message for ops-offline-timed's
// client while its ops wait (for its log line: a test claims the client
// only once its copy here took each message it sent; TestReproLateOpsKept
// sends three).
func (f *faults) heldQueued(op *broker.Op) bool {
	if f == nil || op.Kind != broker.OpQueuePut {
		return false
	}
	return f.opsTimed && f.opsArmed.Load() && op.ClientID == f.opsAfterLost ||
		f.landArmed.Load() && !f.landFree.Load() && op.ClientID == f.landFirst
}

// opsAfterKeep is how long ops-after-keep holds ops after the first
// message kept for the disowned copy: a time, not a count, since the
// copy's confirmations wait for its node's earlier ops (a store Wait
// waits for every op before its own), so a publisher waiting for each
// acknowledgement puts one message into the hold.
const opsAfterKeep = 500 * time.Millisecond

// wentOffline notes op, about to be queued, for ops-after-keep: the
// hold begins with the named client's session going offline.
func (f *faults) wentOffline(op *broker.Op) {
	if f != nil && op.Kind == broker.OpSessionPut && op.ClientID == f.opsAfterKeep && !op.Session.DisconnectedAt.IsZero() {
		f.keepOffline.Store(true)
	}
}

// keptFor notes a message kept for id's disowned copy (ops-after-keep,
// ops-offline-lost).
func (f *faults) keptFor(id string) {
	if f != nil && id == f.opsAfterKeep {
		f.keepFirst.CompareAndSwap(0, time.Now().UnixNano())
	}
	if f != nil && f.opsOffline && id == f.opsAfterLost {
		f.opsKept.Store(true) // ops-offline-lost lets the ops go
	}
}

// holdsOpsUntilKept reports whether the partition stream p takes no ops
// of this node now (ops-after-keep): p is the named client's partition,
// its session went offline, and its disowned copy here kept no message
// opsAfterKeep ago yet. freed is true the one time the hold ends.
func (f *faults) holdsOpsUntilKept(p int, part func(string) int) (held, freed bool) {
	if f == nil || f.opsAfterKeep == "" || f.keepFree.Load() || !f.keepOffline.Load() || part(f.opsAfterKeep) != p {
		return false, false
	}
	if first := f.keepFirst.Load(); first != 0 && time.Since(time.Unix(0, first)) >= opsAfterKeep {
		return false, f.keepFree.CompareAndSwap(false, true)
	}
	return true, false
}

// armsOps arms ops-offline-lost when op journals its client's session
// offline here (the client gone, the session kept): from op on, the
// partition's ops wait as ops-after-lost's do.
func (f *faults) armsOps(op *broker.Op) {
	if f != nil && f.landFirst != "" && op.Kind == broker.OpSessionPut && op.ClientID == f.landFirst &&
		!op.Session.DisconnectedAt.IsZero() {
		f.landArmed.Store(true)
	}
	if f != nil && f.opsOffline && op.Kind == broker.OpSessionPut && op.ClientID == f.opsAfterLost &&
		!op.Session.DisconnectedAt.IsZero() {
		f.opsArmed.Store(true)
	}
}

// landedAfterLost reports, once, that partition p's ops held by
// ops-after-lost are all in the stream: p has nothing unacknowledged.
func (f *faults) landedAfterLost(p int, part func(string) int) bool {
	return f != nil && f.opsAfterLost != "" && f.opsLostFree.Load() && part(f.opsAfterLost) == p && f.opsLostIn.CompareAndSwap(false, true)
}

// firstHeldOps reports whether ops-late holds back ops for the first
// time (for its log line).
func (f *faults) firstHeldOps() bool {
	return f.opsHeld.CompareAndSwap(false, true)
}

// freesOps reports whether giving up id here ends ops-late's hold: the
// ops applied before land in the stream now, after the messages held
// for this node meanwhile.
func (f *faults) freesOps(id string) bool {
	return f != nil && id == f.opsLate && f.opsFree.CompareAndSwap(false, true)
}

// failsRead reports whether this read of id's session from its partition
// stream is the one that fails as the stream comes back (no-quorum).
func (f *faults) failsRead(id string) bool {
	return f != nil && id == f.noQuorum && f.quorumBack.CompareAndSwap(false, true)
}

// rollupLostAfter is when rollup-lost's publish fails: within the
// forwards' forward_timeout, so that ops published after it are
// acknowledged once it is sent again.
const rollupLostAfter = 2 * time.Second

// losesRollup returns, for the first rollup of rollup-lost's client, a
// future for m that fails after rollupLostAfter, m not published; nil
// otherwise.
func (f *faults) losesRollup(id string, m *nats.Msg) jetstream.PubAckFuture {
	if f == nil || id != f.rollupLost || !f.rollupDropped.CompareAndSwap(false, true) {
		return nil
	}
	errs := make(chan error, 1)
	time.AfterFunc(rollupLostAfter, func() { errs <- jetstream.ErrNoStreamResponse })
	return &unansweredHold{msg: m, errs: errs}
}

// rollupPause is how long ops-after-rollup holds the append that queued
// the rollup: the partition sender, woken by it, publishes meanwhile.
const rollupPause = 300 * time.Millisecond

// pausesAfterRollup reports, once, whether the append that queued a
// rollup of id is to return rollupPause late (ops-after-rollup).
func (f *faults) pausesAfterRollup(id string) bool {
	return f != nil && id == f.opsAfterRollup && f.rollupPaused.CompareAndSwap(false, true)
}

// ackedRollup notes that a rollup of id was acknowledged
// (ops-after-rollup).
func (f *faults) ackedRollup(id string) {
	if f != nil && id == f.opsAfterRollup {
		f.rollupAcked.Store(true)
	}
}

// holdsAfterRollup reports whether partition stream p takes no ops of
// this node now (ops-after-rollup): p is the named client's partition
// and its rollup was acknowledged. first is true the one time it says so
// first, for the log.
func (f *faults) holdsAfterRollup(p int, part func(string) int) (held, first bool) {
	if f == nil || f.opsAfterRollup == "" || !f.rollupAcked.Load() || part(f.opsAfterRollup) != p {
		return false, false
	}
	return true, f.afterRollupSaid.CompareAndSwap(false, true)
}

// unanswers returns, while hold-unanswered has holds left to fail, a
// future for m that fails with jetstream.ErrNoStreamResponse without m
// being published: what a hold gets from nats.go while its partition
// stream elects a leader. Nil otherwise: m is to be published.
func (f *faults) unanswers(m *nats.Msg) jetstream.PubAckFuture {
	if f == nil || f.unanswered.Add(-1) < 0 {
		return nil
	}
	errs := make(chan error, 1)
	errs <- jetstream.ErrNoStreamResponse
	return &unansweredHold{msg: m, errs: errs}
}

// holdAnsweredLate returns, under hold-answer-late, a future for m that fails
// with "no response from stream" after the fault's duration, m not
// published; nil otherwise.
func (f *faults) holdAnsweredLate(m *nats.Msg) jetstream.PubAckFuture {
	if f == nil || f.holdAnswerLate <= 0 {
		return nil
	}
	errs := make(chan error, 1)
	time.AfterFunc(f.holdAnswerLate, func() { errs <- jetstream.ErrNoStreamResponse })
	return &unansweredHold{msg: m, errs: errs}
}

// holdElectMax bounds hold-elect's window: a real election's seconds.
const holdElectMax = 30 * time.Second

// electsFor opens hold-elect's window for peer, dropped now; it reports
// whether it did (the first drop of peer only), for the log.
func (f *faults) electsFor(peer string, now time.Time) bool {
	if f == nil || f.holdElect <= 0 {
		return false
	}
	_, had := f.electUntil.LoadOrStore(peer, now.Add(f.holdElect))
	return !had
}

// electing returns, within hold-elect's window for node, a future for m
// (an append to node's held subject) that fails at once with "no
// response from stream", m not published; nil otherwise.
func (f *faults) electing(node string, m *nats.Msg) jetstream.PubAckFuture {
	if f == nil {
		return nil
	}
	until, ok := f.electUntil.Load(node)
	if !ok || !time.Now().Before(until.(time.Time)) {
		return nil
	}
	errs := make(chan error, 1)
	errs <- jetstream.ErrNoStreamResponse
	return &unansweredHold{msg: m, errs: errs}
}

// silences returns, while hold-silent has holds left, a future for m
// that never ends, m not published; nil otherwise.
func (f *faults) silences(m *nats.Msg) jetstream.PubAckFuture {
	if f == nil || f.silent.Add(-1) < 0 {
		return nil
	}
	return &unansweredHold{msg: m}
}

// unansweredHold is the future of a hold that got no answer (unanswers).
type unansweredHold struct {
	msg  *nats.Msg
	errs chan error
}

func (u *unansweredHold) Ok() <-chan *jetstream.PubAck { return nil } // never
func (u *unansweredHold) Err() <-chan error            { return u.errs }
func (u *unansweredHold) Msg() *nats.Msg               { return u.msg }

// holdPace is how long after it was made hold-paced publishes a hold.
const holdPace = 300 * time.Millisecond

// joined notes that this node heard peer join (again).
func (f *faults) joined(peer string) {
	if f != nil && f.holdPaced == peer {
		f.rejoinedAt.Store(time.Now().UnixNano())
	}
}

// pacesHold returns, under hold-paced for node, a future for m that pub
// publishes holdPace later (logged once for one made before node was
// heard again), or with a landing, once answers(node) and the landing
// later; nil otherwise.
func (f *faults) pacesHold(node string, m *nats.Msg, pub func(*nats.Msg) (jetstream.PubAckFuture, error), answers func(string) bool, log func(string, ...any)) jetstream.PubAckFuture {
	if f == nil || f.holdPaced == "" || f.holdPaced != node {
		return nil
	}
	h := &pacedHold{msg: m, ok: make(chan *jetstream.PubAck, 1), errs: make(chan error, 1)}
	made := time.Now()
	go func() {
		time.Sleep(holdPace)
		rejoined := time.Unix(0, f.rejoinedAt.Load())
		if rejoined.After(made) && f.pacedSaid.CompareAndSwap(false, true) {
			log("cluster: test fault: a hold made before its node was heard again published after", "peer", node)
		}
		if f.pacedLanding > 0 && f.rejoinedAt.Load() != 0 && made.Before(rejoined.Add(time.Second)) {
			for end := time.Now().Add(30 * time.Second); !answers(node) && time.Now().Before(end); {
				time.Sleep(50 * time.Millisecond)
			}
			if f.landingSaid.CompareAndSwap(false, true) {
				log("cluster: test fault: a hold on its way when its node was heard again published late", "peer", node, "after", f.pacedLanding)
			}
			time.Sleep(f.pacedLanding)
		}
		pf, err := pub(m)
		if err != nil {
			h.errs <- err
			return
		}
		select {
		case a := <-pf.Ok():
			h.ok <- a
		case err := <-pf.Err():
			h.errs <- err
		}
	}()
	return h
}

// endAtReturn returns, while held-end-at-return has catch-ups left, when
// the node found itself back: this catch-up's first read of its held
// subject's end is to take it as of then.
// A read that failed (the follower starts again) leaves it to the next.
func (f *faults) endAtReturn() (time.Time, bool) {
	if f == nil || f.endsAtReturn.Load() <= 0 {
		return time.Time{}, false
	}
	return time.Unix(0, f.returnedAt.Load()), true
}

// endTaken counts a catch-up endAtReturn's read served; until that
// catch-up ends (caughtUp), its reads bring one message a batch
// (heldBatch), so that the batch that reaches its end has nothing after it.
func (f *faults) endTaken() {
	f.endsAtReturn.Add(-1)
	f.oneByOne.Store(true)
}

// heldBatch is how many messages a draining read of the node's held
// subject asks for: max, or 1 under endTaken.
func (f *faults) heldBatch(max int) int {
	if f != nil && f.oneByOne.Load() {
		return 1
	}
	return max
}

// caughtUp ends endTaken's one message a batch.
func (f *faults) caughtUp() {
	if f != nil {
		f.oneByOne.Store(false)
	}
}

// pacedHold is pacesHold's future.
type pacedHold struct {
	msg  *nats.Msg
	ok   chan *jetstream.PubAck
	errs chan error
}

func (p *pacedHold) Ok() <-chan *jetstream.PubAck { return p.ok }
func (p *pacedHold) Err() <-chan error            { return p.errs }
func (p *pacedHold) Msg() *nats.Msg               { return p.msg }

// goneLateOf returns gone-late's peer; "" for none.
func (f *faults) goneLateOf() string {
	if f == nil {
		return ""
	}
	return f.goneLate
}

// holdsUntilLanded reports whether the partition stream p takes no ops
// of this node now (land-before-fence): p is the named client's
// partition, its session went offline here, and landThenFence has not
// let the ops go yet. freed is true the one time the hold ends.
func (f *faults) holdsUntilLanded(p int, part func(string) int) (held, freed bool) {
	if f == nil || f.landFirst == "" || !f.landArmed.Load() || part(f.landFirst) != p {
		return false, false
	}
	if f.landFree.Load() {
		return false, f.landFreed.CompareAndSwap(false, true)
	}
	return true, false
}

// leavesClaim reports whether a claim of id elsewhere is not to be
// acted on yet (land-before-fence): its release request unanswered, its
// record left to landThenFence. first is true for the first sign of it
// (the record or the request, whichever came first).
func (f *faults) leavesClaim(id string) (leave, first bool) {
	if f == nil || id != f.landFirst || !f.landArmed.Load() || f.landDone.Load() {
		return false, false
	}
	return true, f.landSeen.CompareAndSwap(false, true)
}

// landFirstMax bounds land-before-fence's wait for the claimer's first
// op and for the ops held here to land.
const landFirstMax = 30 * time.Second

// landThenFence is land-before-fence's fence of id for a record naming
// node at epoch: once the claimer's first op is in id's subject, it lets
// the ops held here go, waits for them to land, and fences id then.
func (o *owners) landThenFence(id, node string, epoch uint64) {
	n := o.n
	ctx, cancel := context.WithTimeout(n.ctx, landFirstMax)
	defer cancel()
	mine := n.sess.epochOf(id)
	for ctx.Err() == nil {
		if e, err := n.sess.lastEpoch(ctx, id); err == nil && e > mine {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	n.fault.landFree.Store(true)
	n.log.Info("cluster: test fault: the claimer's op is in the stream; the ops held here go out before this node acts on the claim", "client_id", id, "epoch", mine, "claim", epoch)
	n.sess.awaitSent(ctx, id)
	n.fault.landDone.Store(true)
	n.log.Info("cluster: test fault: the ops held here landed; the claim's record acted on now", "client_id", id, "owner", node, "epoch", epoch)
	o.fenceID(id, node, epoch)
}
