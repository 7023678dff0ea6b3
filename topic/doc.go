// Package topic holds the MQTT topic rules and the indexes built on them:
// validation of topic names and filters, "$share" parsing, wildcard matching,
// the subscription tree used to route every PUBLISH, and the retained-message
// store searched on every SUBSCRIBE.
//
// # Names, filters and levels
//
// A topic name (PUBLISH, will topic) and a topic filter (SUBSCRIBE) are UTF-8
// strings split into levels by '/'. Levels may be empty: "a//b" has three
// levels and "/" has two, both empty. A filter may use '+' for exactly one
// level and '#', as its last level, for the parent level and any number of
// child levels [MQTT-4.7.1-1], [MQTT-4.7.1-2]. Names starting with '$' are
// reserved for the server ($SYS/...) and are not matched by a filter whose
// first level is a wildcard [MQTT-4.7.2-1]; "$SYS/#" matches them.
//
// ValidName and ValidFilter apply the specification's rules and return one
// of the package's sentinel errors; Match is the allocation-free reference
// matcher the indexes are tested against.
//
// # Shared subscriptions
//
// A filter "$share/{ShareName}/{filter}" [MQTT-4.8.2] is split by
// ParseShare. The Tree keeps the plain filter and the ShareName ("group")
// side by side: Tree.Match reports every matching subscription with its
// group, and the broker picks one subscriber per group.
//
// # The subscription tree
//
// Tree is a trie with one node per filter level. A node keeps literal
// children in a small unsorted slice, or a map once it has more than 8,
// and its '+' and '#' children in their own fields, so matching a name
// costs one lookup per level plus one step into each wildcard branch
// present: the cost grows with levels and matches, not with the number of
// subscriptions. Tree.Match splits the name with strings.IndexByte and does
// not allocate. One RWMutex guards a Tree: Subscribe and Unsubscribe take
// the write lock, Match takes the read lock and calls its callback under it.
// Unsubscribe prunes emptied nodes, so churn does not grow the tree.
//
// There is no match cache (as nats-server's sublist has). Measured on a
// 2-core VM, Match of a literal name among 10,000 subscriptions takes about
// 78 ns with no allocation; a cache hit cannot be cheaper than a locked map
// lookup, about 16 ns. Saving at most ~60 ns per PUBLISH does not pay for
// writes on the read path, invalidation on every Subscribe and Unsubscribe,
// and memory per distinct topic. The numbers and the command are in
// testdata/bench.txt.
//
// # Retained messages
//
// Retained is a trie of topic names. MatchFilter follows literal levels by
// lookup and fans out only where the filter has '+' or '#', honouring the
// '$' rule, instead of testing every stored name.
//
// # Memory
//
// Both tries share their child sets (kids.go). Most nodes have a single
// child ("site/1/dev/42" has only "temp"), and a Go map costs about 200
// bytes even for one entry, so up to 8 children live in a slice of
// (level, node) pairs, 24 bytes each; a scan of 8 is as fast as a hash
// (BenchmarkKids). A set that grows past 8 becomes a map and goes back to
// a slice at 4, so nodes that churn around the limit do not convert on
// every change, and emptied sets and nodes are freed at once.
//
// The tries store private copies of levels and of a node's filter, never
// views of the caller's strings: a decoded topic shares its allocation with
// the packet's payload, and a node outlives the message or subscription
// that created it. Retained keeps the full name only where a value is set,
// and that string is the caller's (the broker's Message.Topic), so it costs
// a string header. With 1M retained names "site/{s}/dev/{d}/temp" this is
// about 215 bytes per name, down from about 407 with a map per node
// (BenchmarkRetainedMemory; testdata/bench.txt).
package topic
