package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/roost-mqtt/roost/internal/devcert"
)

const certHelp = `Makes certificates for trying mqtts:// and wss:// on one machine:

  roost cert dev [--dir DIR] [--host NAME]...

writes a local certificate authority (ca.pem, ca-key.pem; kept and reused
if DIR already has one, so you trust it once) and a server certificate for
localhost, 127.0.0.1 and ::1 signed by it (server.pem with the full chain,
server-key.pem), then prints how to serve with them and how to trust the
CA. Never use these in production: clients such as WeChat mini programs
accept only certificates from a publicly trusted CA.`

func runCert(ctx context.Context, args []string, std stdio) int {
	stdout, stderr := std.out, std.err
	if len(args) == 0 || args[0] != "dev" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
			fmt.Fprintf(stderr, "Usage: roost cert dev [flags]\n\n%s\n", certHelp) // like flag's -h
			return 0
		}
		fmt.Fprintf(stderr, "Usage: roost cert dev [flags]\n\n%s\n", certHelp)
		return 2
	}
	fs := newFlagSet("cert dev", "", certHelp, stderr)
	dir := fs.String("dir", "roost-dev-certs", "write the files to `directory`")
	var hosts []string
	fs.Func("host", "also valid for `name` (a DNS name or IP address; repeatable)", func(s string) error {
		hosts = append(hosts, s)
		return nil
	})
	if code, ok := parseFlags(fs, args[1:]); !ok {
		return code
	}
	if err := certDev(*dir, hosts, stdout); err != nil {
		fmt.Fprintf(stderr, "roost cert dev: %v\n", err)
		return 1
	}
	return 0
}

func certDev(dir string, extraHosts []string, out io.Writer) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ca, reused, err := loadOrMakeCA(dir)
	if err != nil {
		return err
	}
	hosts := append([]string{"localhost", "127.0.0.1", "::1"}, extraHosts...)
	chain, key, err := ca.Issue(devcert.Leaf{CommonName: "localhost", Hosts: hosts})
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, "server.pem"), chain, 0o644); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, "server-key.pem"), key, 0o600); err != nil {
		return err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	caState := "wrote a new CA"
	if reused {
		caState = "reused the CA"
	}
	fmt.Fprintf(out, certDevDone, abs, caState, strings.Join(hosts, ", "), abs)
	return nil
}

const certDevDone = `Wrote development certificates to %[1]s (%[2]s):
  ca.pem           the CA certificate: trust this one
  ca-key.pem       the CA key: keep it private
  server.pem       certificate for %[3]s, with the chain
  server-key.pem   its key

Serve with them:
  roost serve --listen mqtt://127.0.0.1:1883 \
    --listen mqtts://127.0.0.1:8883 --listen wss://127.0.0.1:8084/mqtt \
    --tls-cert %[4]s/server.pem --tls-key %[4]s/server-key.pem

Trust the CA:
  mosquitto_sub      --cafile %[4]s/ca.pem -p 8883 -t '#'
  Node (mqtt.js)     NODE_EXTRA_CA_CERTS=%[4]s/ca.pem node app.js
  Debian/Ubuntu      sudo cp %[4]s/ca.pem /usr/local/share/ca-certificates/roost-dev.crt && sudo update-ca-certificates
  macOS              sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain %[4]s/ca.pem
  Chrome on Linux    certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n roost-dev -i %[4]s/ca.pem
  Firefox            Settings > Certificates > View Certificates > Authorities > Import
  WeChat DevTools    Details > Local Settings > "Do not verify valid domain names, TLS versions and HTTPS certificates"
                     (phones accept only a publicly trusted certificate: see docs/wechat.md)
`

// loadOrMakeCA reuses dir's CA if it has one, so that a CA already trusted
// stays valid; otherwise it makes one.
func loadOrMakeCA(dir string) (ca *devcert.CA, reused bool, err error) {
	certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	certPEM, err1 := os.ReadFile(certFile)
	keyPEM, err2 := os.ReadFile(keyFile)
	switch {
	case err1 == nil && err2 == nil:
		ca, err := devcert.LoadCA(certPEM, keyPEM)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w (delete ca.pem and ca-key.pem to make a new CA)", dir, err)
		}
		if time.Until(ca.Cert.NotAfter) < 30*24*time.Hour {
			return nil, false, fmt.Errorf("%s: the CA expires on %s; delete ca.pem and ca-key.pem to make a new one", dir, ca.Cert.NotAfter.Format(time.DateOnly))
		}
		return ca, true, nil
	case !errors.Is(err1, fs.ErrNotExist) && err1 != nil:
		return nil, false, err1
	case !errors.Is(err2, fs.ErrNotExist) && err2 != nil:
		return nil, false, err2
	}
	ca, err = devcert.NewCA("Roost development CA", 10*365*24*time.Hour)
	if err != nil {
		return nil, false, err
	}
	if err := writeFile(keyFile, ca.KeyPEM(), 0o600); err != nil {
		return nil, false, err
	}
	return ca, false, writeFile(certFile, ca.CertPEM(), 0o644)
}

// writeFile writes through a temporary file and a rename, so that a
// server watching the file never reads half of it.
func writeFile(name string, data []byte, perm os.FileMode) error {
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}
