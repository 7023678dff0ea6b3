package packet

import (
	"bufio"
	"errors"
	"io"
)

// readBufferSize is the size of the Reader's bufio.Reader: many small
// packets arrive with one read system call, and a packet that fits is
// decoded straight out of the buffer without another copy.
const readBufferSize = 4096

// bigBody is the largest body the Reader keeps a buffer for between
// packets; larger bodies get a buffer of their own that is dropped after
// decoding, so one big PUBLISH does not pin memory for the connection's life.
const bigBody = 64 << 10

// Reader reads packets from a stream. It is not safe for concurrent use;
// a connection has one reader goroutine.
type Reader struct {
	br      *bufio.Reader
	maxSize int
	body    []byte
}

// NewReader returns a Reader that reads from r through a 4 KiB buffer and
// rejects packets whose total size (fixed header included) exceeds maxSize.
// maxSize <= 0 means no limit beyond the protocol's own.
func NewReader(r io.Reader, maxSize int) *Reader {
	rd := &Reader{br: bufio.NewReaderSize(r, readBufferSize)}
	rd.SetMaxSize(maxSize)
	return rd
}

// SetMaxSize changes the maximum total packet size, e.g. once CONNECT has
// been read. maxSize <= 0 means no limit beyond the protocol's own.
func (r *Reader) SetMaxSize(maxSize int) {
	if maxSize <= 0 {
		maxSize = 1 + 4 + MaxVarint
	}
	r.maxSize = maxSize
}

// ReadPacket reads and decodes the next packet for protocol version v (see
// Decode; v is ignored for CONNECT). It returns io.EOF when the stream ends
// at a packet boundary and io.ErrUnexpectedEOF when it ends inside a packet.
// A packet larger than the maximum size yields a *Error with PacketTooLarge
// before its body is read; the stream is then out of step and the
// connection must be closed. Decode errors are returned as they are,
// including the partial *Connect described at Decode.
func (r *Reader) ReadPacket(v Version) (Packet, error) {
	h, err := ReadFixedHeader(r.br)
	if err != nil {
		return nil, err
	}
	if total := h.HeaderLen + h.Remaining; total > r.maxSize {
		return nil, newError(PacketTooLarge, "", "%v of %d bytes exceeds the maximum of %d", h.Type, total, r.maxSize)
	}
	if h.Remaining <= readBufferSize {
		// Decode copies what it keeps, so the bufio buffer can be used
		// directly.
		body, err := r.br.Peek(h.Remaining)
		if err != nil {
			return nil, unexpected(err)
		}
		p, err := Decode(h, body, v)
		_, _ = r.br.Discard(h.Remaining) // cannot fail: the bytes are buffered
		return p, err
	}
	body := r.body[:0]
	if h.Remaining > bigBody {
		body = nil
	}
	if cap(body) < h.Remaining {
		body = make([]byte, h.Remaining)
	}
	body = body[:h.Remaining]
	if h.Remaining <= bigBody {
		r.body = body
	}
	if _, err := io.ReadFull(r.br, body); err != nil {
		return nil, unexpected(err)
	}
	return Decode(h, body, v)
}

// unexpected turns io.EOF inside a packet into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
