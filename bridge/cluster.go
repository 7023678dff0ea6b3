package bridge

import (
	"fmt"
	"strings"
)

// A bridge on a cluster node (Config.Node set). Every node of a cluster
// runs the bridges of the configuration the nodes share, so N nodes make N
// bridges between one broker (the cluster) and the remote. Left as on one
// node they would share client ids (and take each other over, endlessly:
// one connection per client id, in the cluster and on the remote), send
// the remote N copies of each message published here (every node's
// bridge subscribes, and the cluster routes a message to every node with
// interest), and import N copies of each remote message. So on a cluster:
//
//   - the default client ids include the node's name;
//   - an out rule's local subscription is a shared subscription of the
//     cluster, $share/<LocalGroup>/<filter>: the cluster gives each
//     message to one member of the group, the publishing node's own
//     member first, so the node where a message is published forwards it,
//     once, and its bridge's session keeps it while the remote is away;
//   - an in rule's remote subscription is a shared subscription on the
//     remote, $share/<RemoteGroup>/<filter>: the remote gives each message
//     to one node's bridge, which publishes it here once, and the cluster
//     routes it to every matching subscriber on every node.
//
// A shared subscription cannot have No Local [MQTT-3.8.3-4], which is what
// keeps a two-way bridge from sending messages back on one node; and N
// bridges are N paths, which mosquitto's loop rule (one bridge between
// two brokers) already forbids. A rule going both ways, or an in rule and
// an out rule whose topics meet, would send a message round between the
// nodes and the remote, so New refuses them on a cluster node.

// clustered reports whether the bridge runs on a cluster node.
func (c *Config) clustered() bool { return c.Node != "" }

// shared reports whether it splits the traffic with the other nodes'
// bridges through shared subscriptions (unless Config.Unshared).
func (c *Config) shared() bool { return c.clustered() && !c.Unshared }

// groupName makes s usable as a share group name, which cannot hold the
// characters '/', '+' and '#' [MQTT-4.8.2-2].
func groupName(s string) string {
	return strings.NewReplacer("/", "_", "+", "_", "#", "_").Replace(s)
}

// localGroup is the share group of the out rules' local subscriptions:
// the same on every node, so that the nodes' bridges are its members.
func (c *Config) localGroup() string { return groupName("bridge." + c.Name) }

// remoteGroup is the share group of the in rules' remote subscriptions:
// the same on every node of this cluster, and another cluster's bridge of
// the same name into the same remote is not in it.
func (c *Config) remoteGroup() string {
	if c.Cluster == "" {
		return groupName("roost." + c.Name)
	}
	return groupName(c.Cluster + "." + c.Name)
}

// localSubFilter is the filter the local session subscribes to for r.
func (c *Config) localSubFilter(r Rule) string {
	if !c.shared() {
		return r.LocalFilter()
	}
	return "$share/" + c.localGroup() + "/" + r.LocalFilter()
}

// remoteSubFilter is the filter the remote session subscribes to for r.
func (c *Config) remoteSubFilter(r Rule) string {
	if !c.shared() {
		return r.RemoteFilter()
	}
	return "$share/" + c.remoteGroup() + "/" + r.RemoteFilter()
}

// checkClusterRules refuses, on a cluster node, rules along which a
// message would go round (see above): a rule both ways, or an in rule and
// an out rule whose filters can match one topic on either side.
func (c *Config) checkClusterRules() error {
	if !c.shared() {
		return nil
	}
	for i, r := range c.Topics {
		if r.Direction == Both {
			return fmt.Errorf("%w: bridge %s: topic %d (%s) goes both ways: on a cluster node (every node runs the bridge) a message would go round between the nodes and the remote; use an in rule and an out rule with topics or prefixes that do not meet (docs/bridges.md)",
				ErrConfig, c.Name, i+1, r.Pattern)
		}
	}
	for i, in := range c.Topics {
		if in.Direction != In {
			continue
		}
		for j, out := range c.Topics {
			if out.Direction != Out {
				continue
			}
			if filtersMeet(in.LocalFilter(), out.LocalFilter()) || filtersMeet(in.RemoteFilter(), out.RemoteFilter()) {
				return fmt.Errorf("%w: bridge %s: topics %d (in %q) and %d (out %q) meet: on a cluster node (every node runs the bridge) a message would go round between the nodes and the remote; give them topics or prefixes that do not meet (docs/bridges.md)",
					ErrConfig, c.Name, i+1, in.Pattern, j+1, out.Pattern)
			}
		}
	}
	return nil
}

// filtersMeet reports whether some topic matches both filters a and b.
// It does not apply the rule that leading wildcards skip $ topics, so it
// may say two filters meet when only a $ topic could: refusing then errs
// on the safe side.
func filtersMeet(a, b string) bool {
	al, bl := strings.Split(a, "/"), strings.Split(b, "/")
	for i := 0; i < len(al) && i < len(bl); i++ {
		x, y := al[i], bl[i]
		if x == "#" || y == "#" {
			return true
		}
		if x != "+" && y != "+" && x != y {
			return false
		}
	}
	switch {
	case len(al) == len(bl):
		return true
	case len(al) > len(bl):
		// "a/#" also matches "a" [MQTT-4.7.1-2].
		return len(al) == len(bl)+1 && al[len(bl)] == "#"
	default:
		return len(bl) == len(al)+1 && bl[len(al)] == "#"
	}
}
