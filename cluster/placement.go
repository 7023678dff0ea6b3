package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Re-placing the replicas of a lost node.
//
// Each replicated object (the ownership bucket, the retained stream, the
// session partitions) is a Raft group of Config.Replicas members that
// JetStream places on some of the nodes when it creates it. With more
// nodes than replicas (three replicas on five nodes), losing one node
// leaves each object it held with one member short: still writable (two
// of three), but losing a second node that held a member of the same
// object would leave it without a quorum, although three nodes of five
// still run. JetStream does not move a member off a node that is gone
// by itself; it must be told to remove the peer, and then places a new
// member on a node that has none and copies the object there.
//
// So the node that leads JetStream's meta group looks, every
// placeEvery, at the members of each object: one on a node silent for
// Config.ReplaceAfter (cluster.replace_after, default 15 s), with another
// live node free to take its place, is removed (JetStream's stream
// peer-remove request). ReplaceAfter is far longer than a pause or a
// restart, which must not move every replica of a node:
// a node that comes back after its members were moved is simply no longer
// one of those objects' members (it keeps the rest of its state).

// placeEvery: how often the meta leader looks.
const placeEvery = 2 * time.Second

// replicated lists the JetStream streams of the cluster's replicated
// objects.
func (n *Node) replicated() []string {
	names := []string{"KV_" + ownBucket, retStream}
	if n.sess != nil {
		for p := range n.cfg.Partitions {
			names = append(names, streamName(p))
		}
	}
	return names
}

// placeLoop re-places the members of nodes silent for Config.ReplaceAfter, while
// this node leads the meta group, until the node stops.
func (n *Node) placeLoop() {
	defer n.wg.Done()
	js, err := jetstream.New(n.eng.nc)
	if err != nil {
		n.log.Error("cluster: JetStream client for replica placement", "err", err)
		return
	}
	t := time.NewTicker(placeEvery)
	defer t.Stop()
	// silent: members of the objects not heard from, since when this
	// node noticed.
	silent := map[string]time.Time{}
	for {
		select {
		case <-n.ctx.Done():
			return
		case now := <-t.C:
			live := map[string]bool{n.cfg.Node: true}
			for _, p := range n.remote.nodes() {
				live[p] = true
				delete(silent, p)
			}
			if !n.eng.srv.JetStreamIsLeader() || n.metaPeersLive(live) {
				continue
			}
			for _, name := range n.replicated() {
				n.replace(js, name, live, silent, now)
			}
		}
	}
}

// metaPeersLive reports whether every peer of JetStream's meta group is
// in live. Each object's members are meta peers, so then none is silent
// and the round has nothing to do. Without this check the meta leader of
// an idle, healthy cluster asked each of the ten objects' leaders for its
// info every placeEvery: five stream info requests a second, each decoded
// by every node (docs/testing.md, "Where the cluster packages' CPU
// goes"). The meta group's peers are this process's own state (Jsz, no
// request); a peer without a live name, or no answer, counts as not live,
// and the round reads the members as before (TestClusterReplicasReplaced
// fails if it does not).
func (n *Node) metaPeersLive(live map[string]bool) bool {
	jz, err := n.eng.srv.Jsz(nil)
	if err != nil || jz.Meta == nil || jz.Meta.Size == 0 {
		return false
	}
	if !live[jz.Meta.Leader] || len(jz.Meta.Replicas) != jz.Meta.Size-1 {
		return false
	}
	for _, r := range jz.Meta.Replicas {
		if !live[r.Name] {
			return false
		}
	}
	return true
}

// replace removes from stream name's members one on a node silent for
// Config.ReplaceAfter, if a live node that is no member can take its place.
func (n *Node) replace(js jetstream.JetStream, name string, live map[string]bool, silent map[string]time.Time, now time.Time) {
	ctx, cancel := context.WithTimeout(n.ctx, 2*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, name)
	if err != nil {
		return // not created yet, or no leader: next time
	}
	ci := st.CachedInfo().Cluster
	if ci == nil {
		return
	}
	members := map[string]bool{ci.Leader: true}
	for _, r := range ci.Replicas {
		members[r.Name] = true
	}
	free := 0
	for node := range live {
		if !members[node] {
			free++
		}
	}
	for member := range members {
		if member == "" || live[member] {
			continue
		}
		since, noted := silent[member]
		if !noted {
			silent[member] = now
			continue
		}
		if now.Sub(since) < n.cfg.ReplaceAfter || free == 0 {
			continue
		}
		if err := n.removePeer(ctx, name, member); err != nil {
			n.log.Warn("cluster: replica of a silent node not re-placed", "stream", name, "peer", member, "err", err)
			return
		}
		n.log.Info("cluster: replica of a silent node re-placed", "stream", name, "peer", member, "silent", now.Sub(since).Round(time.Second))
		return // one at a time: the stream is re-read next round
	}
}

// removePeer asks JetStream to remove peer from stream's members, which
// makes it place a new one.
func (n *Node) removePeer(ctx context.Context, stream, peer string) error {
	req, _ := json.Marshal(map[string]string{"peer": peer})
	reply, err := n.eng.nc.RequestWithContext(ctx, "$JS.API.STREAM.PEER.REMOVE."+stream, req)
	if err != nil {
		return err
	}
	var resp struct {
		Success bool `json:"success"`
		Error   *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return err
	}
	if !resp.Success {
		if resp.Error != nil {
			return fmt.Errorf("%s", resp.Error.Description)
		}
		return fmt.Errorf("peer not removed")
	}
	return nil
}
