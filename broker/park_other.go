//go:build !linux || roost_portable

package broker

import (
	"errors"
	"syscall"
)

// poller is Linux-only (epoll); elsewhere idle connections keep their
// reader goroutine. The build tag roost_portable selects this file on
// Linux too, so the fallback is tested where the tests run
// (scripts/test.sh runs the broker's tests with it).
type poller struct{}

// parkingSupported: idle connections keep their reader.
const parkingSupported = false

func newPoller() (*poller, error)             { return nil, errors.New("idle parking needs epoll (Linux)") }
func (p *poller) close()                      {}
func (p *poller) register(*conn)              {}
func (p *poller) unregister(*conn)            {}
func (p *poller) arm(fd int, id uint64) error { return errors.New("no epoll") }

// linger: nothing parks here, so Shutdown never ends a parked connection.
func (p *poller) linger(syscall.RawConn, *conn) error { return errors.New("no epoll") }
