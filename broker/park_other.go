//go:build !linux

package broker

import "errors"

// poller is Linux-only (epoll); elsewhere idle connections keep their
// reader goroutine.
type poller struct{}

func newPoller() (*poller, error)             { return nil, errors.New("idle parking needs epoll (Linux)") }
func (p *poller) close()                      {}
func (p *poller) register(*conn)              {}
func (p *poller) unregister(*conn)            {}
func (p *poller) arm(fd int, id uint64) error { return errors.New("no epoll") }
