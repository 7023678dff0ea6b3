#!/usr/bin/env bash
# Runs Roost's whole test suite from a fresh clone: installs the real MQTT
# peers the interop tests drive (mosquitto, mosquitto-clients, nftables for
# the partition tests and, when
# test/interop and test/listeners have lockfiles, their npm packages and
# Chromium for the browser test), then go vet and the race
# tests. Meant for root on Debian; re-running it is cheap, because every
# install step is skipped when its tools are already present.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then
	sudo="sudo"
fi

have() { command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ]; }

apt_updated=""
apt_install() {
	if [ -z "$apt_updated" ]; then
		$sudo apt-get update
		apt_updated=1
	fi
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

if ! have mosquitto_pub || ! have mosquitto; then
	apt_install mosquitto mosquitto-clients
fi
if ! have nft; then
	apt_install nftables # internal/netfault's partitions, inside a private network namespace
fi
if ! have gcc; then
	apt_install gcc libc6-dev # go test -race needs cgo
fi
if [ -f test/interop/package-lock.json ]; then
	if ! have npm; then
		apt_install nodejs npm
	fi
	npm ci --prefix test/interop --no-audit --no-fund
fi
if [ -f test/listeners/package-lock.json ]; then
	if ! have npm; then
		apt_install nodejs npm
	fi
	npm ci --prefix test/listeners --no-audit --no-fund
	if [ ! -x /usr/bin/chromium ]; then
		apt_install chromium # the browser test drives it with playwright-core
	fi
fi
if [ -f test/console/package-lock.json ]; then
	if ! have npm; then
		apt_install nodejs npm
	fi
	npm ci --prefix test/console --no-audit --no-fund
	# console/ too: its test compares the committed mqtt.min.js with the
	# lockfile's (the console's assets are committed, so no build step).
	npm ci --prefix console --no-audit --no-fund
	if [ ! -x /usr/bin/chromium ]; then
		apt_install chromium # the console test drives it with playwright-core
	fi
fi

go vet ./...
go test -race -count=1 -timeout 15m ./...
