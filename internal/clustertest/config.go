package clustertest

import (
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// TestPartitions is the session partitions (`cluster: partitions`,
// cluster.Config.Partitions) of a test cluster whose Options do not ask
// for others: 2, not the product's 8. Each partition is a replicated
// stream, a Raft group on every node; with 2 an idle 3-node cluster uses
// 16 % less CPU and starts with 10 % less (docs/testing.md, "Fewer session
// partitions"), and the two cluster packages' CPU is mostly such nodes.
// Two still give a cluster a session and a held subject in different
// streams (n1's and n2's held subjects are in different partitions, n1's
// and n3's in one): a test that needs a placement the count decides
// computes it with PartitionOf, and one that needs the product's count
// asks for it (Options.Partitions).
const TestPartitions = 2

// PartitionOf is the session partition of id (a client id, or a node
// name for its held subject) among partitions, as the cluster places
// them (cluster/sessions.go, partition: FNV-1a of the id).
func PartitionOf(id string, partitions int) int {
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32() % uint32(partitions))
}

// configArg is the flag a node's config file is given with.
const configArg = "--config"

// withConfig returns args with every node's config file carrying the
// test's partitions. A --config in args (the last one, which the flag
// parser takes: TestClusterDiskFullHeldAfterKill gives n3 a second one in
// NodeArgs) is replaced by a copy of its file with partitions added,
// written beside it so that the paths in it resolve as before; without
// one, args get one Start writes into dir (config's YAML, or an empty
// one). Start calls it for each node's whole argument list, so every node
// of a cluster runs with the same count, which the cluster requires (a
// node with another count refuses to start).
func withConfig(args []string, dir, config string, partitions int) ([]string, error) {
	i := -1
	for j, a := range args {
		if a == configArg {
			i = j
		}
	}
	if i >= 0 && config != "" {
		return nil, fmt.Errorf("clustertest: both Options.Config and a %s argument", configArg)
	}
	src, b := filepath.Join(dir, "roost.yaml"), []byte(config)
	if i >= 0 {
		if i+1 == len(args) {
			return nil, fmt.Errorf("clustertest: %s without a file", configArg)
		}
		var err error
		src = args[i+1]
		if b, err = os.ReadFile(src); err != nil {
			return nil, fmt.Errorf("clustertest: %w", err)
		}
	}
	out, err := addPartitions(b, partitions)
	if err != nil {
		return nil, fmt.Errorf("clustertest: %s: %w", src, err)
	}
	dst := filepath.Join(filepath.Dir(src), "test-"+strconv.Itoa(partitions)+"-"+filepath.Base(src))
	if err := writeAtomic(dst, out); err != nil {
		return nil, err
	}
	if i < 0 {
		return append(slices.Clone(args), configArg, dst), nil
	}
	args = slices.Clone(args)
	args[i+1] = dst
	return args, nil
}

// addPartitions returns the YAML config b with `cluster: partitions: n`
// added unless b sets partitions itself (a test's own count wins).
func addPartitions(b []byte, n int) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	if doc.Kind == 0 { // empty: a document of an empty mapping
		doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode}}}
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config is not a mapping")
	}
	cl := lookup(root, "cluster")
	if cl == nil {
		cl = &yaml.Node{Kind: yaml.MappingNode}
		root.Content = append(root.Content, scalar("cluster"), cl)
	}
	if cl.Kind != yaml.MappingNode { // "cluster:" with nothing under it
		*cl = yaml.Node{Kind: yaml.MappingNode}
	}
	if lookup(cl, "partitions") == nil {
		cl.Content = append(cl.Content, scalar("partitions"), scalar(strconv.Itoa(n)))
	}
	return yaml.Marshal(&doc)
}

// lookup returns the value of key in the mapping node m, nil if absent.
func lookup(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func scalar(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Value: v} }

// writeAtomic writes path through a temporary file and a rename: a node
// restarted while a test writes never reads half a config.
func writeAtomic(path string, b []byte) error {
	if err := os.WriteFile(path+".tmp", b, 0o644); err != nil {
		return fmt.Errorf("clustertest: %w", err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return fmt.Errorf("clustertest: %w", err)
	}
	return nil
}
