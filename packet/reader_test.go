package packet

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
)

// countingReader counts Read calls and bytes handed out.
type countingReader struct {
	r     io.Reader
	calls int
	n     int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.calls++
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func encodeAll(t testing.TB, v Version, ps ...Packet) []byte {
	t.Helper()
	var b []byte
	for _, p := range ps {
		var err error
		if b, err = p.Encode(b, v); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func TestReaderReadsEverySample(t *testing.T) {
	for _, v := range versions {
		ps := samples(v)
		cr := &countingReader{r: bytes.NewReader(encodeAll(t, v, ps...))}
		r := NewReader(cr, 0)
		for _, want := range ps {
			got, err := r.ReadPacket(v)
			if err != nil {
				t.Fatalf("%v %v: %v", v, want.Type(), err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%v: got %+v, want %+v", v, got, want)
			}
		}
		if _, err := r.ReadPacket(v); err != io.EOF {
			t.Errorf("%v: after the last packet: %v, want io.EOF", v, err)
		}
		// All samples fit in the 4 KiB buffer: one read, one more for EOF.
		if cr.calls > 2 {
			t.Errorf("%v: %d Read calls for %d small packets", v, cr.calls, len(ps))
		}
	}
}

func TestReaderLargePackets(t *testing.T) {
	for _, size := range []int{readBufferSize, readBufferSize + 1, bigBody + 1} {
		p := &Publish{Topic: "big", QoS: 1, PacketID: 1, Payload: bytes.Repeat([]byte{'x'}, size)}
		wire := encodeAll(t, V311, p, p)
		r := NewReader(bytes.NewReader(wire), 0)
		for i := 0; i < 2; i++ {
			got, err := r.ReadPacket(V311)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, p) {
				t.Errorf("size %d: packet changed", size)
			}
		}
	}
}

func TestReaderEOF(t *testing.T) {
	wire := encodeAll(t, V311, &Publish{Topic: "t", Payload: []byte("payload")})
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty stream", nil, io.EOF},
		{"inside the fixed header", b(0x30), io.ErrUnexpectedEOF},
		{"inside the varint", b(0x30, 0x80), io.ErrUnexpectedEOF},
		{"inside the body", wire[:len(wire)-1], io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewReader(bytes.NewReader(tt.in), 0).ReadPacket(V311)
			if err != tt.want {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestReaderMaxSize(t *testing.T) {
	p := &Publish{Topic: "t", Payload: make([]byte, 100000)}
	wire := encodeAll(t, V5, p)
	cr := &countingReader{r: bytes.NewReader(wire)}
	r := NewReader(cr, 1000)
	_, err := r.ReadPacket(V5)
	var e *Error
	if !errors.As(err, &e) || e.Code != PacketTooLarge {
		t.Fatalf("error %v, want PacketTooLarge", err)
	}
	if cr.n > readBufferSize {
		t.Errorf("read %d bytes of a rejected packet", cr.n)
	}

	// The limit counts the fixed header: a packet of exactly maxSize passes.
	wire = encodeAll(t, V5, &Pingreq{}, &Pingreq{})
	r = NewReader(bytes.NewReader(wire), 2)
	if _, err := r.ReadPacket(V5); err != nil {
		t.Fatal(err)
	}
	r.SetMaxSize(1)
	if _, err := r.ReadPacket(V5); !errors.As(err, &e) || e.Code != PacketTooLarge {
		t.Fatalf("after SetMaxSize(1): %v, want PacketTooLarge", err)
	}
}

func TestReaderDecodeError(t *testing.T) {
	r := NewReader(bytes.NewReader(pkt(0x36, s("t"), b(0, 1))), 0)
	_, err := r.ReadPacket(V311)
	var e *Error
	if !errors.As(err, &e) || e.Rule != "MQTT-3.3.1-4" {
		t.Fatalf("error %v, want MQTT-3.3.1-4", err)
	}
}
