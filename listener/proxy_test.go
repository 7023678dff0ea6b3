package listener

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

// v2 builds a PROXY v2 header: verCmd, famProto, then body.
func v2(verCmd, fam byte, body ...[]byte) []byte {
	b := bytes.Clone(v2Signature)
	b = append(b, verCmd, fam)
	all := bytes.Join(body, nil)
	b = binary.BigEndian.AppendUint16(b, uint16(len(all)))
	return append(b, all...)
}

func TestReadProxyHeader(t *testing.T) {
	ipv4 := []byte{192, 0, 2, 7, 10, 0, 0, 1, 0x30, 0x39, 0x07, 0x5b} // 192.0.2.7:12345 -> 10.0.0.1:1883
	ipv6 := append(append(bytes.Repeat([]byte{0}, 15), 1), append(bytes.Repeat([]byte{0}, 15), 2)...)
	ipv6 = append(ipv6, 0x00, 0x50, 0x07, 0x5b) // [::1]:80 -> [::2]:1883
	tlv := []byte{0x04, 0x00, 0x02, 'h', 'i'}   // PP2_TYPE_NOOP, skipped
	tests := []struct {
		name string
		in   []byte
		addr string // "" = header valid but no address; "err" = rejected
	}{
		{"v1 tcp4", []byte("PROXY TCP4 192.0.2.7 10.0.0.1 12345 1883\r\n"), "192.0.2.7:12345"},
		{"v1 tcp6", []byte("PROXY TCP6 2001:db8::1 ::1 40000 443\r\n"), "[2001:db8::1]:40000"},
		{"v1 unknown", []byte("PROXY UNKNOWN\r\n"), ""},
		{"v1 unknown with addresses", []byte("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"), ""},
		{"v1 longest", []byte("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"), "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"},
		{"v1 no CRLF", []byte("PROXY TCP4 192.0.2.7 10.0.0.1 12345 1883\n"), "err"},
		{"v1 too long", []byte("PROXY TCP4 " + strings.Repeat("1", 120) + "\r\n"), "err"},
		{"v1 family mismatch", []byte("PROXY TCP4 2001:db8::1 ::1 1 2\r\n"), "err"},
		{"v1 bad port", []byte("PROXY TCP4 192.0.2.7 10.0.0.1 123456 1883\r\n"), "err"},
		{"v1 leading zero port", []byte("PROXY TCP4 192.0.2.7 10.0.0.1 0123 1883\r\n"), "err"},
		{"v1 missing field", []byte("PROXY TCP4 192.0.2.7 10.0.0.1 12345\r\n"), "err"},
		{"v1 bad address", []byte("PROXY TCP4 192.0.2 10.0.0.1 1 2\r\n"), "err"},
		{"v1 udp", []byte("PROXY UDP4 192.0.2.7 10.0.0.1 1 2\r\n"), "err"},
		{"v1 lowercase", []byte("proxy TCP4 192.0.2.7 10.0.0.1 1 2\r\n"), "err"},
		{"v2 tcp4", v2(0x21, 0x11, ipv4), "192.0.2.7:12345"},
		{"v2 tcp4 with TLV", v2(0x21, 0x11, ipv4, tlv), "192.0.2.7:12345"},
		{"v2 tcp6", v2(0x21, 0x21, ipv6), "[::1]:80"},
		{"v2 local", v2(0x20, 0x00), ""},
		{"v2 local with body", v2(0x20, 0x11, ipv4), ""},
		{"v2 unspec", v2(0x21, 0x00), ""},
		{"v2 unix", v2(0x21, 0x31, make([]byte, 216)), ""},
		{"v2 version 1", v2(0x11, 0x11, ipv4), "err"},
		{"v2 command 2", v2(0x22, 0x11, ipv4), "err"},
		{"v2 udp", v2(0x21, 0x12, ipv4), "err"},
		{"v2 short body", v2(0x21, 0x11, ipv4[:8]), "err"},
		{"v2 truncated", v2(0x21, 0x11, ipv4)[:20], "err"},
		{"v2 bad signature", append([]byte("\r\n\r\n\x00\r\nQUIX\n"), 0x21, 0x11, 0, 12), "err"},
		{"no header", []byte{0x10, 0x0c, 0x00, 0x04, 'M', 'Q', 'T', 'T'}, "err"},
		{"empty", nil, "err"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mqtt := []byte{0x10, 0x00} // what follows must stay unread
			br := bufio.NewReaderSize(bytes.NewReader(append(bytes.Clone(tt.in), mqtt...)), 256)
			addr, ok, err := readProxyHeader(br)
			switch {
			case tt.addr == "err":
				if !errors.Is(err, ErrProxyHeader) {
					t.Fatalf("got %v, %v, %v; want ErrProxyHeader", addr, ok, err)
				}
				return
			case err != nil:
				t.Fatal(err)
			case tt.addr == "" && ok, tt.addr != "" && (!ok || addr.String() != tt.addr):
				t.Fatalf("got %v (ok %v), want %q", addr, ok, tt.addr)
			}
			rest, _ := io.ReadAll(br)
			if !bytes.Equal(rest, mqtt) {
				t.Errorf("left % x after the header, want % x", rest, mqtt)
			}
		})
	}
}

func FuzzReadProxyHeader(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.0.2.7 10.0.0.1 12345 1883\r\n"))
	f.Add(v2(0x21, 0x11, make([]byte, 12)))
	f.Fuzz(func(t *testing.T, in []byte) {
		addr, ok, err := readProxyHeader(bufio.NewReaderSize(bytes.NewReader(in), 256))
		if ok && (err != nil || addr == nil) {
			t.Fatalf("ok with %v, %v", addr, err)
		}
	})
}
