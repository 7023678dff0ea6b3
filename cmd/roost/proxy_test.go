package main

import (
	"encoding/binary"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// socksServer is a minimal SOCKS5 proxy for tests (RFC 1928 CONNECT, no
// authentication or RFC 1929 user name and password). It resolves names
// itself, as a socks5h:// proxy must, and records what it was asked for.
type socksServer struct {
	port       string
	user, pass string
	mu         sync.Mutex
	targets    []string // "name:port" or "ip:port" as requested
}

func startSOCKS5(t *testing.T, user, pass string) *socksServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &socksServer{port: strconv.Itoa(ln.Addr().(*net.TCPAddr).Port), user: user, pass: pass}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); s.serve(c) }()
		}
	}()
	return s
}

func (s *socksServer) requested() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.targets...)
}

func (s *socksServer) serve(c net.Conn) {
	defer c.Close()
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(c, hdr); err != nil || hdr[0] != 5 {
		return
	}
	methods := make([]byte, hdr[1])
	io.ReadFull(c, methods)
	want := byte(0)
	if s.user != "" {
		want = 2
	}
	if !strings.ContainsRune(string(methods), rune(want)) {
		c.Write([]byte{5, 0xFF})
		return
	}
	c.Write([]byte{5, want})
	if want == 2 {
		field := func() string {
			var n [1]byte
			io.ReadFull(c, n[:])
			b := make([]byte, n[0])
			io.ReadFull(c, b)
			return string(b)
		}
		var ver [1]byte
		io.ReadFull(c, ver[:])
		u, p := field(), field()
		if u != s.user || p != s.pass {
			c.Write([]byte{1, 1})
			return
		}
		c.Write([]byte{1, 0})
	}
	req := make([]byte, 4)
	if _, err := io.ReadFull(c, req); err != nil || req[1] != 1 {
		return
	}
	var host string
	switch req[3] {
	case 1, 4:
		ip := make(net.IP, 4)
		if req[3] == 4 {
			ip = make(net.IP, 16)
		}
		io.ReadFull(c, ip)
		host = ip.String()
	case 3:
		var n [1]byte
		io.ReadFull(c, n[:])
		name := make([]byte, n[0])
		io.ReadFull(c, name)
		host = string(name)
	}
	var port [2]byte
	io.ReadFull(c, port[:])
	target := net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(port[:]))))
	s.mu.Lock()
	s.targets = append(s.targets, target)
	s.mu.Unlock()
	up, err := net.Dial("tcp", target)
	if err != nil {
		c.Write([]byte{5, 5, 0, 1, 0, 0, 0, 0, 0, 0}) // connection refused
		return
	}
	defer up.Close()
	c.Write([]byte{5, 0, 0, 1, 127, 0, 0, 1, 0, 0})
	go func() { io.Copy(up, c); up.Close() }()
	io.Copy(c, up)
}

// roost pub and roost sub reach the broker through a SOCKS5 proxy, with
// and without a password, by host name (resolved by the proxy) or address;
// a wrong password or an unreachable broker fails with the proxy's reason.
func TestProxy(t *testing.T) {
	t.Parallel()
	port := startBroker(t)
	open := startSOCKS5(t, "", "")
	locked := startSOCKS5(t, "car", "s3cret")

	// A subscriber through the locked proxy sees what a publisher sends
	// through the open one.
	type result struct {
		code        int
		out, stderr string
	}
	subDone := make(chan result, 1)
	go func() {
		code, out, errOut := runRoost(t, "sub", "-h", "localhost", "-p", port, "-t", "px", "-C", "1", "-W", "8",
			"--proxy", "socks5h://car:s3cret@127.0.0.1:"+locked.port)
		subDone <- result{code, out, errOut}
	}()
	if !eventually(t, 5*time.Second, func() bool { return len(locked.requested()) == 1 }) {
		t.Fatal("sub did not go through the proxy")
	}
	// The SUBSCRIBE may still be on its way and the message is not
	// retained: publish until the subscriber has one (or its -W ends).
	var r result
	for done := false; !done; {
		code, _, errOut := runRoost(t, "pub", "-h", "127.0.0.1", "-p", port, "-t", "px", "-m", "hello", "-q", "1",
			"--proxy", "socks5h://127.0.0.1:"+open.port)
		if code != 0 {
			t.Fatalf("pub through proxy: exit %d: %s", code, errOut)
		}
		select {
		case r = <-subDone:
			done = true
		case <-time.After(100 * time.Millisecond):
		}
	}
	if r.code != 0 || r.out != "hello\n" {
		t.Fatalf("sub through proxy: exit %d, out %q, stderr %q", r.code, r.out, r.stderr)
	}
	if got := locked.requested(); got[0] != "localhost:"+port {
		t.Errorf("socks5h sent %q, want the name for the proxy to resolve", got)
	}
	if got := open.requested(); got[0] != "127.0.0.1:"+port {
		t.Errorf("proxy asked for %q", got)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--proxy", "socks5h://car:wrong@127.0.0.1:" + locked.port}, "refused the user name or password"},
		{[]string{"--proxy", "socks5h://127.0.0.1:" + locked.port}, "accepts none of our authentication methods"},
		{[]string{"-p", "1", "--proxy", "socks5h://127.0.0.1:" + open.port}, "connection refused"},
		{[]string{"--proxy", "http://127.0.0.1:" + open.port}, "Unsupported proxy protocol"},
	} {
		args := append([]string{"pub", "-h", "127.0.0.1", "-p", port, "-t", "x", "-m", "y"}, tc.args...)
		code, _, errOut := runRoost(t, args...)
		if code != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want 1 and %q", tc.args, code, errOut, tc.want)
		}
	}
}
