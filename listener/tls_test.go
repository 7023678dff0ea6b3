package listener_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/devcert"
	"github.com/roost-mqtt/roost/internal/eventually"
	"github.com/roost-mqtt/roost/listener"
)

// pollEvery is the test's Watch interval: short, so that many polls
// happen within each phase of a test.
const pollEvery = 10 * time.Millisecond

// watched is a CertManager over one certificate pair in a temp dir, with
// Watch running and its reports collected.
type watched struct {
	ca            *devcert.CA
	m             *listener.CertManager
	cert, key     string
	reports       chan error
	serialAtStart string
}

func newWatched(t *testing.T) *watched {
	t.Helper()
	ca, err := devcert.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	w := &watched{ca: ca, cert: filepath.Join(dir, "server.pem"), key: filepath.Join(dir, "server-key.pem"),
		reports: make(chan error, 100)}
	chain, key := w.issue(t)
	w.write(t, w.cert, chain, hourAgo)
	w.write(t, w.key, key, hourAgo)
	w.m, err = listener.NewCertManager(listener.TLSOptions{Certs: []listener.KeyPair{{Cert: w.cert, Key: w.key}}})
	if err != nil {
		t.Fatal(err)
	}
	w.serialAtStart = w.serial(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		w.m.Watch(ctx, pollEvery, nil, func(err error) { w.reports <- err })
	}()
	return w
}

func (w *watched) issue(t *testing.T) (chain, key []byte) {
	t.Helper()
	chain, key, err := w.ca.Issue(devcert.Leaf{CommonName: "localhost", Hosts: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	return chain, key
}

// Modification times for write: the start's, and two later ones.
var (
	hourAgo    = time.Now().Add(-time.Hour).Truncate(time.Second)
	minuteAgo  = hourAgo.Add(59 * time.Minute)
	secondsAgo = minuteAgo.Add(50 * time.Second)
)

// write replaces name atomically (temp file + rename) and gives it the
// modification time mod, as cp -p, rsync -t or tar would.
func (w *watched) write(t *testing.T, name string, data []byte, mod time.Time) {
	t.Helper()
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(tmp, mod, mod); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, name); err != nil {
		t.Fatal(err)
	}
}

// serial returns the serial number of the certificate the manager serves.
func (w *watched) serial(t *testing.T) string {
	t.Helper()
	cfg, err := w.m.Config().GetConfigForClient(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf.SerialNumber.String()
}

// next waits for Watch's next report.
func (w *watched) next(t *testing.T) error {
	t.Helper()
	select {
	case err := <-w.reports:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Watch reported nothing within 10s")
		return nil
	}
}

// A certificate renewed by writing the chain first and then the key, the
// key keeping a modification time and size the poll already saw: the
// first load fails (the new chain does not match the old key), the old
// certificate stays, the failure is reported once, and the next poll after
// the key is written loads the pair although no file changed since.
func TestWatchRetriesFailedReload(t *testing.T) {
	w := newWatched(t)
	chain, key := w.issue(t)

	w.write(t, w.cert, chain, minuteAgo)
	err := w.next(t)
	if err == nil || !strings.Contains(err.Error(), "private key does not match") {
		t.Fatalf("report after the chain alone: %v, want a key mismatch", err)
	}
	if w.serial(t) != w.serialAtStart {
		t.Fatal("a failed reload replaced the certificate")
	}
	// Many polls retry and fail the same way: none of them reports again.
	// (A window without a report cannot fail spuriously on a slow machine;
	// it only sees fewer retries.)
	select {
	case err := <-w.reports:
		t.Fatalf("reported again while nothing changed: %v", err)
	case <-time.After(30 * pollEvery):
	}

	w.write(t, w.key, key, hourAgo) // the start's time and size: no visible change
	if err := w.next(t); err != nil {
		t.Fatalf("report after the key: %v", err)
	}
	if w.serial(t) == w.serialAtStart {
		t.Fatal("the renewed certificate is not served")
	}
}

// A chain file caught half-written fails to load and is loaded at a later
// poll once complete, even when the completed file has the size and
// modification time the poll saw while it was broken.
func TestWatchRetriesHalfWrittenFile(t *testing.T) {
	w := newWatched(t)
	chain, key := w.issue(t)
	w.write(t, w.key, key, minuteAgo) // the key first: now the pair mismatches
	if err := w.next(t); err == nil {
		t.Fatal("a key without its chain loaded")
	}
	half := []byte(strings.Repeat(" ", len(chain)))
	copy(half, chain[:40]) // inside the first PEM block
	w.write(t, w.cert, half, secondsAgo)
	if err := w.next(t); err == nil || !strings.Contains(err.Error(), "PEM") {
		t.Fatalf("report for a half-written chain: %v, want a PEM error", err)
	}
	w.write(t, w.cert, chain, secondsAgo) // same size, same modification time
	eventually.True(t, 10*time.Second, func() bool { return w.serial(t) != w.serialAtStart },
		"the completed chain is never loaded")
	if err := w.next(t); err != nil {
		t.Fatalf("report after the completed chain: %v", err)
	}
}
