#!/usr/bin/env bash
# Builds Debian packages of Roost: dist/roost_VERSION_ARCH.deb for amd64
# and arm64 (or the architectures given as arguments).
#
#   ./scripts/package.sh              # amd64 and arm64
#   ./scripts/package.sh amd64        # one
#   ROOST_VERSION=1.2.3 ./scripts/package.sh
#   DIST_DIR=/tmp/out ./scripts/package.sh   # elsewhere than dist/
#
# The binary is cross-compiled by Go (no cgo), stamped with the version
# (`roost version`), and packed with dpkg-deb, Debian's own tool for the
# .deb format: it is on every Debian and Ubuntu machine, writes what dpkg
# reads by definition, and needs no packaging framework for a package with
# one binary, one conffile, one unit and three maintainer scripts. The
# package's files are in packaging/deb/.
set -euo pipefail
cd "$(dirname "$0")/.."

arches=("$@")
if [ ${#arches[@]} -eq 0 ]; then
	arches=(amd64 arm64)
fi

# A Debian version must start with a digit: a tag v1.2.3 gives 1.2.3; an
# untagged tree gives 0.0.0~gitYYYYMMDD.COMMIT (sorting before any release).
version="${ROOST_VERSION:-}"
if [ -z "$version" ]; then
	if tag=$(git describe --tags --exact-match 2>/dev/null); then
		version="${tag#v}"
	else
		version="0.0.0~git$(git log -1 --format=%cd --date=format:%Y%m%d).$(git rev-parse --short=12 HEAD)"
	fi
fi
if ! [[ "$version" =~ ^[0-9][A-Za-z0-9.+~-]*$ ]]; then
	echo "package.sh: version \"$version\" is not a Debian version (it must start with a digit)" >&2
	exit 2
fi

if ! command -v dpkg-deb >/dev/null; then
	echo "package.sh: dpkg-deb is missing (apt-get install dpkg)" >&2
	exit 2
fi

dist="${DIST_DIR:-dist}"
mkdir -p "$dist"
for arch in "${arches[@]}"; do
	case "$arch" in
	amd64 | arm64) ;;
	*)
		echo "package.sh: unsupported architecture \"$arch\" (amd64, arm64)" >&2
		exit 2
		;;
	esac
	stage=$(mktemp -d)
	trap 'rm -rf "$stage"' EXIT
	root="$stage/root"
	mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/etc/roost" "$root/lib/systemd/system" "$root/usr/share/doc/roost"

	CGO_ENABLED=0 GOOS=linux GOARCH="$arch" go build -trimpath \
		-ldflags "-s -w -X main.version=$version" -o "$root/usr/bin/roost" ./cmd/roost

	install -m 0644 packaging/deb/roost.yaml "$root/etc/roost/roost.yaml"
	install -m 0644 packaging/deb/roost.service "$root/lib/systemd/system/roost.service"
	install -m 0644 README.md "$root/usr/share/doc/roost/README.md"
	for doc in docs/*.md; do
		install -m 0644 "$doc" "$root/usr/share/doc/roost/"
	done
	install -m 0644 packaging/deb/conffiles "$root/DEBIAN/conffiles"
	for script in postinst prerm postrm; do
		install -m 0755 "packaging/deb/$script" "$root/DEBIAN/$script"
	done
	size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
	sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
		packaging/deb/control >"$root/DEBIAN/control"

	out="$dist/roost_${version}_${arch}.deb"
	# --root-owner-group: every file root:root whoever builds it; the
	# roost user and group are made by postinst.
	dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >/dev/null
	rm -rf "$stage"
	trap - EXIT
	echo "$out"
done
