package cluster

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roost-mqtt/roost/broker"
)

// A trace of a failed run (test/jepsen TestClusterFull, a repro test's kept
// data) often comes down to what a partition stream held and in which
// order: which ops of a session were stored, at which epoch, and where a
// held or kept copy stands in a node's held subject. The node logs say
// what a node did, not what the stream kept. TestStreamDump prints it from
// a node's data directory as it is on disk (nats-server's message blocks,
// read without a server: the streams are replicated and a standalone
// server refuses to open them), one line per stored message, a session
// op pack decoded op by op:
//
//	go test ./cluster -run TestStreamDump -count=1 -v -dump.dir RUN/n1 [-dump.stream ROOST_SESS_4] [-dump.grep ps0] > dump.txt
//
// A QueuePut shows the message's payload as test/jepsen writes it (j<op>).
var (
	dumpDir    = flag.String("dump.dir", "", "TestStreamDump: a node's data directory (the one holding cluster/jetstream)")
	dumpStream = flag.String("dump.stream", "", "TestStreamDump: only this stream (default: every ROOST_SESS_* stream)")
	dumpGrep   = flag.String("dump.grep", "", "TestStreamDump: only lines containing this")
)

func TestStreamDump(t *testing.T) {
	if *dumpDir == "" {
		t.Skip("a tool: -dump.dir DIR prints DIR's session streams")
	}
	streams, err := filepath.Glob(filepath.Join(*dumpDir, "cluster", "jetstream", "*", "streams", "ROOST_SESS_*"))
	if err != nil || len(streams) == 0 {
		t.Fatalf("no session streams under %s/cluster/jetstream/*/streams (%v)", *dumpDir, err)
	}
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	for _, dir := range streams {
		name := filepath.Base(dir)
		if *dumpStream != "" && name != *dumpStream {
			continue
		}
		err := dumpStreamDir(dir, func(r blockRecord) {
			line := fmt.Sprintf("%s %d %s %s%s %s", name, r.seq, time.Unix(0, r.ts).UTC().Format("15:04:05.000000"),
				r.subject, formatDumpHeaders(r.hdr), describeStored(r.subject, r.msg))
			if *dumpGrep == "" || strings.Contains(line, *dumpGrep) {
				fmt.Fprintln(w, line)
			}
		})
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// blockRecord is one message as a nats-server message block stores it.
type blockRecord struct {
	seq     uint64
	ts      int64
	subject string
	hdr     []byte
	msg     []byte
}

// dumpStreamDir calls f for every stored message of the stream whose
// directory is dir, block by block in index order; deleted ones and
// tombstones are left out.
func dumpStreamDir(dir string, f func(blockRecord)) error {
	blks, err := filepath.Glob(filepath.Join(dir, "msgs", "*.blk"))
	if err != nil {
		return err
	}
	index := func(p string) int {
		i, _ := strconv.Atoi(strings.TrimSuffix(filepath.Base(p), ".blk"))
		return i
	}
	slices.SortFunc(blks, func(a, b string) int { return index(a) - index(b) })
	for _, p := range blks {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := readBlock(b, f); err != nil {
			return fmt.Errorf("%s: %w", filepath.Base(p), err)
		}
	}
	return nil
}

// The record layout of nats-server's filestore (v2.10 on; filestore.go,
// writeMsgRecord): length with the headers bit, sequence with the
// tombstone and erased bits, timestamp, subject length, then the subject,
// the headers' length and headers if any, the message and a checksum.
const (
	blockHdrSize  = 22
	blockHashSize = 8
	blockHasHdrs  = 1 << 31
	blockErased   = 1 << 63
	blockTomb     = 1 << 62
)

func readBlock(b []byte, f func(blockRecord)) error {
	for len(b) > 0 {
		if len(b) < blockHdrSize {
			return fmt.Errorf("%d bytes left, shorter than a record", len(b))
		}
		rl := binary.LittleEndian.Uint32(b)
		hasHdrs := rl&blockHasHdrs != 0
		rl &^= blockHasHdrs
		seq := binary.LittleEndian.Uint64(b[4:])
		ts := int64(binary.LittleEndian.Uint64(b[12:]))
		slen := int(binary.LittleEndian.Uint16(b[20:]))
		if int(rl) > len(b) || int(rl) < blockHdrSize+slen+blockHashSize {
			return fmt.Errorf("record of %d bytes at seq %d does not fit (%d left)", rl, seq&^(blockErased|blockTomb), len(b))
		}
		data := b[blockHdrSize : rl-blockHashSize]
		b = b[rl:]
		if seq&(blockErased|blockTomb) != 0 || slen == 0 {
			continue
		}
		r := blockRecord{seq: seq, ts: ts, subject: string(data[:slen])}
		data = data[slen:]
		if hasHdrs {
			if len(data) < 4 {
				return fmt.Errorf("seq %d: headers cut", seq)
			}
			hl := int(binary.LittleEndian.Uint32(data))
			if 4+hl > len(data) {
				return fmt.Errorf("seq %d: headers of %d bytes cut", seq, hl)
			}
			r.hdr, data = data[4:4+hl], data[4+hl:]
		}
		r.msg = data
		f(r)
	}
	return nil
}

// formatDumpHeaders gives a stored message's headers as " [K=V ...]", the
// Roost- prefix cut; "" for none.
func formatDumpHeaders(hdr []byte) string {
	if len(hdr) == 0 {
		return ""
	}
	h, err := readNATSHeaders(hdr)
	if err != nil {
		return " [headers: " + err.Error() + "]"
	}
	var kv []string
	for k, vs := range h {
		for _, v := range vs {
			kv = append(kv, strings.TrimPrefix(k, "Roost-")+"="+v)
		}
	}
	slices.Sort(kv)
	return " [" + strings.Join(kv, " ") + "]"
}

// readNATSHeaders parses a NATS/1.0 header block.
func readNATSHeaders(b []byte) (nats.Header, error) {
	s := string(b)
	first, rest, ok := strings.Cut(s, "\r\n")
	if !ok || !strings.HasPrefix(first, "NATS/1.0") {
		return nil, errors.New("not a NATS/1.0 header block")
	}
	h := nats.Header{}
	for _, line := range strings.Split(rest, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			h.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		}
	}
	return h, nil
}

// describeStored decodes a session stream's message by its subject: a
// client's ops, a held message, or a share group's claim (held.go
// claimSubject: its data names the member, "served:" for a claim made
// outside the held copies, servedClaim).
func describeStored(subject string, b []byte) string {
	if strings.Contains(subject, ".heldgroup.") {
		if member, ok := strings.CutPrefix(string(b), "\x00"); ok {
			return "group claim for served:" + member
		}
		return "group claim for " + string(b)
	}
	if strings.Contains(subject, "."+heldToken+".") {
		k, rm, err := decodeHeld(b)
		if err != nil {
			return "held: " + err.Error()
		}
		return fmt.Sprintf("held origin=%s/%s/%d topic=%s qos=%d groups=%v payload=%s", k.node, k.inc, k.id, rm.Topic, rm.QoS,
			rm.Groups, dumpPayload(rm.Payload))
	}
	return describeOps(b)
}

// describeOps decodes an op or a pack of ops (sessions_wire.go).
func describeOps(b []byte) string {
	if len(b) >= 2 && b[0] == wireVersion && b[1] == opPack {
		rd := reader{b: b[2:]}
		n := rd.uvarint()
		var out []string
		for i := uint64(0); i < n && rd.err == nil; i++ {
			size := rd.uvarint()
			if rd.err != nil || size > uint64(len(rd.b)) {
				return strings.Join(append(out, "(pack cut)"), " | ")
			}
			out = append(out, describeOp(rd.b[:size]))
			rd.b = rd.b[size:]
		}
		return strings.Join(out, " | ")
	}
	return describeOp(b)
}

func describeOp(b []byte) string {
	rd := reader{b: b}
	if rd.byte() != wireVersion {
		return "(not an op)"
	}
	kind := broker.OpKind(rd.byte())
	epoch := rd.uvarint()
	switch kind {
	case broker.OpSessionPut:
		exp, delay, disc := rd.uvarint(), rd.uvarint(), rd.uvarint()
		return fmt.Sprintf("SessPut e%d expiry=%d will_delay=%dms disconnected=%s will=%v", epoch, exp, delay,
			dumpMilli(disc), rd.byte() == 1)
	case broker.OpSessionDel:
		return fmt.Sprintf("SessDel e%d", epoch)
	case broker.OpSubPut:
		return fmt.Sprintf("SubPut e%d %s", epoch, rd.string())
	case broker.OpSubDel:
		return fmt.Sprintf("SubDel e%d %s", epoch, rd.string())
	case broker.OpQueuePut:
		seq := rd.uvarint()
		qos, _, rel := rd.byte(), rd.byte(), rd.byte() == 1
		pid := rd.uvarint()
		for n := rd.uvarint(); n > 0 && rd.err == nil; n-- {
			rd.uvarint()
		}
		m := readMessage(&rd)
		if rd.err != nil || m == nil {
			return fmt.Sprintf("QPut e%d s%d (cut)", epoch, seq)
		}
		relS := ""
		if rel {
			relS = " REL"
		}
		place := ""
		if pl := m.Place(); pl.Source != "" {
			// The place a catch-up orders by (broker.Place): which
			// anchors an adopted queue gave (bench/jepsen/RESULTS.md, ord31).
			place = fmt.Sprintf(" @%s/%d", strings.ReplaceAll(pl.Source, "\x00", "/"), pl.Seq)
		}
		return fmt.Sprintf("QPut e%d s%d q%d%s p%d %s %s%s", epoch, seq, qos, relS, pid, m.Topic, dumpPayload(m.Payload), place)
	case broker.OpQueueDel:
		return fmt.Sprintf("QDel e%d s%d", epoch, rd.uvarint())
	case broker.OpInboundPut:
		return fmt.Sprintf("InPut e%d p%d", epoch, rd.uvarint())
	case broker.OpInboundDel:
		return fmt.Sprintf("InDel e%d p%d", epoch, rd.uvarint())
	}
	return fmt.Sprintf("op kind %d e%d", kind, epoch)
}

func dumpMilli(ms uint64) string {
	if ms == 0 {
		return "0"
	}
	return fromUnixMilli(ms).UTC().Format("15:04:05.000")
}

// dumpPayload shows a payload as text when it is short and printable.
func dumpPayload(p []byte) string {
	if len(p) > 32 {
		return fmt.Sprintf("(%d bytes)", len(p))
	}
	for _, c := range p {
		if c < ' ' || c > '~' {
			return fmt.Sprintf("%x", p)
		}
	}
	return string(p)
}

// TestStreamDumpReadsBlocks: the dump reads what this nats-server version
// stores (a new version may change its block format): a session op pack
// and a held message, each with headers, come back as published.
func TestStreamDumpReadsBlocks(t *testing.T) {
	t.Parallel() // an in-process engine: it waits on its election, beside the process tests
	nd, js := engineJS(t)
	// "No suitable peers" until the meta leader knows every peer, and a
	// request before the new stream has a leader may go unanswered (see
	// TestCreateOrUpdateStreamUpdates): each step is tried again, with a
	// bound per attempt; the publishes carry message ids, so that a
	// second attempt of one that was stored is not stored again.
	jsStep(t, "create the stream", func(ctx context.Context) error {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ROOST_SESS_D", Subjects: []string{"d.>"}, Storage: jetstream.FileStorage, Replicas: 3})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil // an earlier attempt made it
		}
		return err
	})
	m := &broker.Message{Topic: "t/1", QoS: 1, Payload: []byte("j42")}
	put, err := encodeOpBody(&broker.Op{Kind: broker.OpQueuePut, ClientID: "c", Delivery: broker.StoredDelivery{Seq: 7, QoS: 1, PacketID: 5, Msg: m}}, "")
	if err != nil {
		t.Fatal(err)
	}
	del, err := encodeOpBody(&broker.Op{Kind: broker.OpQueueDel, ClientID: "c", Delivery: broker.StoredDelivery{Seq: 6}}, "")
	if err != nil {
		t.Fatal(err)
	}
	pack := appendPack(nil, []repOp{{kind: broker.OpQueuePut, body: put}, {kind: broker.OpQueueDel, body: del}}, []uint64{3, 3})
	pub, err := encodePublish(m)
	if err != nil {
		t.Fatal(err)
	}
	held := encodeHeld(originKey{node: "n3", inc: "ab", id: 9}, encodeForward(m, nil, pub))
	for i, msg := range []*nats.Msg{
		{Subject: "d.c.c", Data: pack, Header: nats.Header{opMadeHeader: []string{"1"}}},
		{Subject: "d." + heldToken + ".c.n1", Data: held, Header: nats.Header{heldForHeader: []string{"c"}}},
	} {
		jsStep(t, "publish", func(ctx context.Context) error {
			_, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(fmt.Sprint("d", i)))
			return err
		})
	}
	// nd's replica: stored (synced on every write) once nd applied both,
	// moments after the leader's answer when nd is a follower.
	var got []string
	for bound := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		dirs, _ := filepath.Glob(filepath.Join(nd.cfg.Data, "*", "*", "streams", "ROOST_SESS_D"))
		got = got[:0]
		var err error = errors.New("no stream directory yet")
		if len(dirs) == 1 {
			err = dumpStreamDir(dirs[0], func(r blockRecord) {
				got = append(got, fmt.Sprintf("%d %s%s %s", r.seq, r.subject, formatDumpHeaders(r.hdr), describeStored(r.subject, r.msg)))
			})
		}
		if err == nil && len(got) == 2 {
			break
		}
		if time.Now().After(bound) {
			t.Fatalf("%s: %d records read, %v", nd.cfg.Data, len(got), err)
		}
	}
	want := []string{
		"1 d.c.c [Nats-Msg-Id=d0 Op-Made=1] QPut e3 s7 q1 p5 t/1 j42 | QDel e3 s6",
		"2 d.held.c.n1 [Held-For=c Nats-Msg-Id=d1] held origin=n3/ab/9 topic=t/1 qos=1 groups=[] payload=j42",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("dump:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
