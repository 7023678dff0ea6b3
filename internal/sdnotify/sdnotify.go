// Package sdnotify tells a service manager about the service's state with
// the sd_notify protocol: one datagram ("READY=1", "STOPPING=1",
// "STATUS=...") to the unix socket named by $NOTIFY_SOCKET.
// systemd sets that variable for Type=notify services; everywhere else it
// is unset and every call does nothing, so `roost serve` run from a shell
// behaves as before. It is a few lines of the protocol rather than a
// dependency: the protocol is a stable, documented datagram format.
package sdnotify

import (
	"fmt"
	"net"
	"strings"
)

// Notifier sends states to one socket.
type Notifier struct {
	addr string // "" when there is no service manager
}

// New returns a Notifier for the socket named by notifySocket (the value
// of $NOTIFY_SOCKET; a leading '@' names an abstract socket). An empty
// value gives a Notifier that does nothing.
func New(notifySocket string) *Notifier {
	if strings.HasPrefix(notifySocket, "@") {
		notifySocket = "\x00" + notifySocket[1:]
	}
	return &Notifier{addr: notifySocket}
}

// Enabled reports whether a service manager listens.
func (n *Notifier) Enabled() bool { return n != nil && n.addr != "" }

// Notify sends the newline-separated assignments in state. It returns an
// error when the socket cannot be reached; a Notifier without a socket
// returns nil.
func (n *Notifier) Notify(state ...string) error {
	if !n.Enabled() {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(strings.Join(state, "\n"))); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// Ready says the service accepts work.
func (n *Notifier) Ready() error { return n.Notify("READY=1") }

// Stopping says the service is shutting down.
func (n *Notifier) Stopping() error { return n.Notify("STOPPING=1") }

// Status sets the free-form status line `systemctl status` shows.
func (n *Notifier) Status(s string) error { return n.Notify("STATUS=" + s) }
