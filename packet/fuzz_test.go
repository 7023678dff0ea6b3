package packet

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to ParseFixedHeader and Decode for every
// version. Nothing may panic, every failure must be an *Error, and whatever
// decodes must encode again and decode to an equal packet.
func FuzzDecode(f *testing.F) {
	for _, g := range goldens {
		f.Add(g.wire)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ParseFixedHeader(data)
		if err != nil {
			if err != ErrIncomplete && !isError(err) {
				t.Fatalf("ParseFixedHeader: %v is not an *Error", err)
			}
			return
		}
		if len(data)-h.HeaderLen < h.Remaining {
			return
		}
		body := data[h.HeaderLen : h.HeaderLen+h.Remaining]
		for _, v := range versions {
			checkDecode(t, h, body, v)
		}
	})
}

func isError(err error) bool {
	var e *Error
	return errors.As(err, &e)
}

func checkDecode(t *testing.T, h FixedHeader, body []byte, v Version) {
	if h.Type == CONNECT {
		scratch := dirtyConnect()
		sameAsDecode(t, h, body, &scratch)
	}
	if h.Type == PUBLISH {
		var tc TopicCache
		samePublishAsDecode(t, h, body, v, &tc)
		samePublishAsDecode(t, h, body, v, &tc) // the topic cached, if valid
	}
	p, err := Decode(h, body, v)
	if err != nil {
		if !isError(err) {
			t.Fatalf("%v: Decode error %v is not an *Error", v, err)
		}
		if p != nil && p.Type() != CONNECT {
			t.Fatalf("%v: Decode returned %v with error %v", v, p.Type(), err)
		}
		return
	}
	ev := v
	if c, ok := p.(*Connect); ok {
		ev = c.ProtocolVersion
	}
	wire, err := p.Encode(nil, ev)
	if err != nil {
		t.Fatalf("%v: decoded %+v but cannot encode it: %v", v, p, err)
	}
	again, err := decodeWire(wire, v)
	if err != nil {
		t.Fatalf("%v: re-encoded % x does not decode: %v\npacket %+v", v, wire, err, p)
	}
	if !reflect.DeepEqual(again, p) {
		t.Fatalf("%v: round trip changed the packet\nfirst  %+v\nsecond %+v", v, p, again)
	}
}

// TestWriteFuzzSeeds regenerates testdata/fuzz/FuzzDecode when
// ROOST_WRITE_SEEDS=1; otherwise it only checks that the corpus is there.
func TestWriteFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if os.Getenv("ROOST_WRITE_SEEDS") != "1" {
		if entries, err := os.ReadDir(dir); err != nil || len(entries) < 20 {
			t.Errorf("seed corpus %s: %d entries, %v", dir, len(entries), err)
		}
		return
	}
	seeds := map[string][]byte{}
	for _, v := range versions {
		for i, p := range samples(v) {
			wire, err := p.Encode(nil, v)
			if err != nil {
				t.Fatal(err)
			}
			seeds[fmt.Sprintf("sample-v%d-%02d-%s", v, i, strings.ToLower(p.Type().String()))] = wire
		}
	}
	for _, r := range ruleTests {
		seeds["bad-"+slug(r.name)] = r.wire
	}
	seeds["nasty-5-byte-varint"] = b(0x30, 0x80, 0x80, 0x80, 0x80, 0x01)
	seeds["nasty-huge-remaining"] = b(0x30, 0xFF, 0xFF, 0xFF, 0x7F, 0, 1, 't')
	seeds["nasty-prop-length-huge"] = pkt(0x30, s("t"), b(0xFF, 0xFF, 0xFF, 0x7F))
	seeds["nasty-string-length-past-end"] = pkt(0x10, b(0xFF, 0xFF, 'M'))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, wire := range seeds {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", wire)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func slug(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '-'
	}, s)
}
