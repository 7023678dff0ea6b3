package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// errFinished is the reason a connection ends after our own DISCONNECT.
var errFinished = errors.New("client: disconnected")

// conn is one network connection: a reader goroutine, a writer goroutine
// that flushes batched packets with one write, and a keep-alive goroutine.
// Packets are encoded by the caller and handed over with write, which
// never blocks.
type conn struct {
	c       *Client
	nc      net.Conn
	rd      *packet.Reader
	v       packet.Version
	server  string
	connack *packet.Connack

	// Server limits from CONNACK.
	keepAlive time.Duration
	recvMax   uint16
	maxPacket uint32
	aliasMax  uint16
	aliasOut  map[string]uint16 // guarded by Client.mu
	aliasIn   map[uint16]string // reader goroutine only

	mu        sync.Mutex
	out       [][]byte
	finishing bool // DISCONNECT queued: close after flushing
	wake      chan struct{}

	dead     chan struct{}
	deadOnce sync.Once
	err      error // why it died; valid after dead is closed

	lastWrite atomic.Int64 // unix nanos
	lastRead  atomic.Int64
	pingSent  atomic.Int64 // unix nanos of the unanswered PINGREQ, 0 if none

	wg sync.WaitGroup
}

// dialServer connects to server and completes the CONNECT/CONNACK
// exchange within Options.ConnectTimeout.
func (c *Client) dialServer(server string) (*conn, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.ConnectTimeout)
	defer cancel()
	nc, err := dial(ctx, server, c.opts.TLSConfig, c.opts.DialContext)
	if err != nil {
		return nil, err
	}
	cn, err := c.handshake(ctx, nc, server)
	if err != nil {
		nc.Close()
		if !c.bridgeFallback(err) {
			return nil, err
		}
		// mosquitto's fallback for a server that does not know the
		// bridge bit: connect again without it.
		if nc, err = dial(ctx, server, c.opts.TLSConfig, c.opts.DialContext); err != nil {
			return nil, err
		}
		if cn, err = c.handshake(ctx, nc, server); err != nil {
			nc.Close()
			return nil, err
		}
	}
	return cn, nil
}

// bridgeFallback reports whether err is a refusal of the bridge bit, and
// if so turns the bit off.
func (c *Client) bridgeFallback(err error) bool {
	var re *ReasonError
	if !c.opts.Bridge || c.opts.Version == packet.V5 || c.bridgeRefused.Load() ||
		!errors.As(err, &re) || re.Op != "connect" || re.Code != packet.Connack311BadProtocolVersion {
		return false
	}
	c.opts.Logger.Info("server refused the bridge protocol level; connecting as a plain client", "server_code", byte(re.Code))
	c.bridgeRefused.Store(true)
	return true
}

func (c *Client) handshake(ctx context.Context, nc net.Conn, server string) (*conn, error) {
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	c.mu.Lock()
	first := !c.sess.connectedOnce
	c.mu.Unlock()
	cp := c.connectPacket(first)
	b, err := cp.Encode(nil, c.opts.Version)
	if err != nil {
		return nil, err
	}
	if _, err := nc.Write(b); err != nil {
		return nil, ctxErr(ctx, err)
	}
	rd := packet.NewReader(nc, int(c.opts.MaxPacketSize))
	p, err := rd.ReadPacket(c.opts.Version)
	if err != nil {
		return nil, ctxErr(ctx, fmt.Errorf("client: reading CONNACK: %w", err))
	}
	ca, ok := p.(*packet.Connack)
	if !ok {
		return nil, fmt.Errorf("client: expected CONNACK, got %v", p.Type())
	}
	if ca.ReasonCode != packet.Success {
		return nil, &ReasonError{Op: "connect", Code: ca.ReasonCode, Reason: ca.Properties.ReasonString, V311: c.opts.Version != packet.V5}
	}
	if !stop() {
		return nil, ctxErr(ctx, context.Canceled)
	}
	nc.SetDeadline(time.Time{})
	c.mu.Lock()
	c.sess.connectedOnce = true
	c.mu.Unlock()
	return c.newConn(nc, rd, server, ca), nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("client: connect: %w", ctx.Err())
	}
	return err
}

// connectPacket builds CONNECT. Clean Start is set on the first connection
// unless KeepSession; 3.1.1's Clean Session is the same on every connection.
func (c *Client) connectPacket(first bool) *packet.Connect {
	o := &c.opts
	cp := &packet.Connect{
		ProtocolVersion: o.Version, ClientID: o.ClientID, // the name follows the version: MQIsdp for 3.1

		Username: o.Username, UsernameFlag: o.Username != "",
		Password: []byte(o.Password), PasswordFlag: o.Password != "",
		Bridge: o.Bridge && o.Version != packet.V5 && !c.bridgeRefused.Load(),
	}
	if o.KeepAlive > 0 {
		cp.KeepAlive = uint16(min(o.KeepAlive.Round(time.Second)/time.Second, 65535))
		if cp.KeepAlive == 0 {
			cp.KeepAlive = 1
		}
	}
	if o.Version == packet.V5 {
		cp.CleanStart = first && !o.KeepSession
		cp.Properties = o.ConnectProperties
		if exp := uint32(min(o.SessionExpiry/time.Second, 0xFFFFFFFF)); exp > 0 {
			cp.Properties.Set(packet.PropSessionExpiry)
			cp.Properties.SessionExpiry = exp
		}
		if o.ReceiveMaximum > 0 {
			cp.Properties.Set(packet.PropReceiveMaximum)
			cp.Properties.ReceiveMaximum = o.ReceiveMaximum
		}
		if o.MaxPacketSize > 0 {
			cp.Properties.Set(packet.PropMaximumPacketSize)
			cp.Properties.MaximumPacketSize = o.MaxPacketSize
		}
		if o.TopicAliasMaximum > 0 {
			cp.Properties.Set(packet.PropTopicAliasMaximum)
			cp.Properties.TopicAliasMaximum = o.TopicAliasMaximum
		}
	} else {
		cp.CleanStart = !o.KeepSession
	}
	if w := o.Will; w != nil {
		cp.WillFlag, cp.WillTopic, cp.WillPayload = true, w.Topic, w.Payload
		cp.WillQoS, cp.WillRetain, cp.WillProperties = w.QoS, w.Retain, w.Properties
		if cp.WillPayload == nil {
			cp.WillPayload = []byte{}
		}
	}
	return cp
}

func (c *Client) newConn(nc net.Conn, rd *packet.Reader, server string, ca *packet.Connack) *conn {
	cn := &conn{
		c: c, nc: nc, rd: rd, v: c.opts.Version, server: server, connack: ca,
		keepAlive: c.opts.KeepAlive, recvMax: c.opts.MaxInflight,
		aliasOut: map[string]uint16{}, aliasIn: map[uint16]string{},
		wake: make(chan struct{}, 1), dead: make(chan struct{}),
	}
	if cn.keepAlive < 0 {
		cn.keepAlive = 0
	}
	pr := &ca.Properties
	if cn.v == packet.V5 {
		if pr.Has(packet.PropServerKeepAlive) {
			cn.keepAlive = time.Duration(pr.ServerKeepAlive) * time.Second
		}
		if pr.Has(packet.PropReceiveMaximum) && pr.ReceiveMaximum > 0 {
			cn.recvMax = min(cn.recvMax, pr.ReceiveMaximum)
		}
		if pr.Has(packet.PropMaximumPacketSize) {
			cn.maxPacket = pr.MaximumPacketSize
		}
		if pr.Has(packet.PropTopicAliasMaximum) {
			cn.aliasMax = pr.TopicAliasMaximum
		}
	}
	now := time.Now().UnixNano()
	cn.lastWrite.Store(now)
	cn.lastRead.Store(now)
	return cn
}

func (cn *conn) startLoops() {
	cn.wg.Add(2)
	go cn.readLoop()
	go cn.writeLoop()
	if cn.keepAlive > 0 {
		cn.wg.Add(1)
		go cn.keepAliveLoop()
	}
}

// close ends the connection with err as the reason. Idempotent.
func (cn *conn) close(err error) {
	cn.deadOnce.Do(func() {
		cn.err = err
		cn.nc.Close()
		close(cn.dead)
	})
}

// write queues an encoded packet. It never blocks; after finish or close
// it drops b.
func (cn *conn) write(b []byte) {
	cn.mu.Lock()
	if cn.finishing {
		cn.mu.Unlock()
		return
	}
	cn.out = append(cn.out, b)
	cn.mu.Unlock()
	select {
	case cn.wake <- struct{}{}:
	default:
	}
}

func (cn *conn) writePacket(p packet.Packet) {
	b, err := p.Encode(nil, cn.v)
	if err != nil {
		cn.close(err)
		return
	}
	cn.write(b)
}

// finish queues p (a DISCONNECT) as the last packet: the writer flushes
// and then closes the connection.
func (cn *conn) finish(p packet.Packet) {
	b, _ := p.Encode(nil, cn.v)
	cn.mu.Lock()
	if !cn.finishing {
		cn.out = append(cn.out, b)
		cn.finishing = true
	}
	cn.mu.Unlock()
	select {
	case cn.wake <- struct{}{}:
	default:
	}
}

// writeLoop flushes everything queued with one writev per wake-up.
func (cn *conn) writeLoop() {
	defer cn.wg.Done()
	for {
		select {
		case <-cn.wake:
		case <-cn.dead:
			return
		}
		cn.mu.Lock()
		bufs, fin := cn.out, cn.finishing
		cn.out = nil
		cn.mu.Unlock()
		if len(bufs) > 0 {
			nb := net.Buffers(bufs)
			if _, err := nb.WriteTo(cn.nc); err != nil {
				cn.close(fmt.Errorf("client: write: %w", err))
				return
			}
			cn.lastWrite.Store(time.Now().UnixNano())
		}
		if fin {
			// Half-close so the server reads DISCONNECT before EOF.
			if tc, ok := cn.nc.(interface{ CloseWrite() error }); ok {
				tc.CloseWrite()
			}
			cn.close(errFinished)
			return
		}
	}
}

// keepAliveLoop sends PINGREQ when nothing was written or read for the
// keep alive interval, and declares the connection lost when PINGRESP is
// late. It runs apart from the writer so a blocked write cannot hide a
// dead peer.
func (cn *conn) keepAliveLoop() {
	defer cn.wg.Done()
	timeout := cn.c.opts.PingTimeout
	tick := min(cn.keepAlive, timeout) / 4
	t := time.NewTicker(max(tick, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-cn.dead:
			return
		case now := <-t.C:
			if sent := cn.pingSent.Load(); sent != 0 {
				if now.Sub(time.Unix(0, sent)) > timeout {
					cn.close(ErrPingTimeout)
					return
				}
				continue
			}
			idleW := now.Sub(time.Unix(0, cn.lastWrite.Load()))
			idleR := now.Sub(time.Unix(0, cn.lastRead.Load()))
			if idleW >= cn.keepAlive*3/4 || idleR >= cn.keepAlive {
				cn.pingSent.Store(now.UnixNano())
				cn.writePacket(&packet.Pingreq{})
			}
		}
	}
}

func (cn *conn) readLoop() {
	defer cn.wg.Done()
	for {
		p, err := cn.rd.ReadPacket(cn.v)
		if err != nil {
			var pe *packet.Error
			if errors.As(err, &pe) {
				cn.protocolError(pe.Code, err)
			} else {
				cn.close(fmt.Errorf("client: read: %w", err))
			}
			return
		}
		cn.lastRead.Store(time.Now().UnixNano())
		if err := cn.c.handlePacket(cn, p); err != nil {
			return
		}
	}
}

// protocolError tells an MQTT 5 server why with DISCONNECT, then closes.
func (cn *conn) protocolError(code packet.ReasonCode, err error) error {
	if cn.v == packet.V5 {
		b, _ := (&packet.Disconnect{ReasonCode: code}).Encode(nil, cn.v)
		cn.nc.SetWriteDeadline(time.Now().Add(time.Second))
		cn.nc.Write(b)
	}
	cn.close(err)
	return err
}
