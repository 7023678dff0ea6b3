package console

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"
)

// The committed mqtt.min.js is the build of the version package-lock.json
// pins: web/vendor/mqtt.min.js.json (written by build.mjs) names its
// version and hash, and node_modules, when installed, holds the same bytes.
func TestVendoredMQTTMatchesLockfile(t *testing.T) {
	var lock struct {
		Packages map[string]struct{ Version string } `json:"packages"`
	}
	readJSON(t, "package-lock.json", &lock)
	want := lock.Packages["node_modules/mqtt"].Version
	if want == "" {
		t.Fatal("package-lock.json pins no mqtt")
	}
	var meta struct{ Version, SHA256 string }
	readJSON(t, "web/vendor/mqtt.min.js.json", &meta)
	if meta.Version != want {
		t.Fatalf("web/vendor/mqtt.min.js is mqtt %s, package-lock.json pins %s: run npm ci && npm run build in console/", meta.Version, want)
	}
	js, err := Assets.ReadFile("web/vendor/mqtt.min.js")
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(js); hex.EncodeToString(sum[:]) != meta.SHA256 {
		t.Fatal("web/vendor/mqtt.min.js does not match the hash build.mjs recorded: run npm run build in console/")
	}
	if installed, err := os.ReadFile("node_modules/mqtt/dist/mqtt.min.js"); err == nil && string(installed) != string(js) {
		t.Fatal("web/vendor/mqtt.min.js differs from node_modules/mqtt/dist/mqtt.min.js: run npm run build in console/")
	}
}

func readJSON(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}
