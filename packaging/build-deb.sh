#!/bin/bash
# Build the Debian package into OUTDIR (default: dist/): sockact_<version>_all.deb, and the
# source package and .changes beside it (lintian reads the .changes).
#
#   packaging/build-deb.sh [OUTDIR]
#
# SOCKACT_DEB_VERSION=V builds the same tree as version V (no dash: the source format is
# native). Only the temporary copy changes, never the working tree; the upgrade test uses it.
#
# The build runs in a fresh copy of the files git tracks, so build litter never
# lands in the working tree, and with Debian's /usr/bin/python3 first on PATH: the package is
# built for, and its unit tests run on, the interpreter it will run on. Missing build
# dependencies are installed with apt first (as root); the build itself needs no network.
set -euo pipefail

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# A developer's virtualenv or pyenv must not leak into Debian's interpreter.
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV PYENV_VERSION

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
outdir=$(mkdir -p "${1:-$repo/dist}" && cd "${1:-$repo/dist}" && pwd)
started=$SECONDS

work=$(mktemp -d "${TMPDIR:-/tmp}/sockact-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
src=$work/sockact
mkdir "$src"

# -- a clean copy of the tree
if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	# The tracked files, with their working-tree contents: local tools and scratch files (say a
	# virtualenv under bench/) never reach the source package. Add a new file (git add -N is
	# enough) to build it. Files deleted but not yet committed are skipped.
	git -C "$repo" ls-files -z --cached |
		while IFS= read -r -d '' f; do [ -e "$repo/$f" ] && printf '%s\0' "$f"; done |
		tar -C "$repo" --null --no-recursion -T - -cf - | tar -C "$src" -xf -
else
	tar -C "$repo" --exclude=./.git --exclude=./.venv --exclude=./dist --exclude=./build \
		--exclude='__pycache__' -cf - . | tar -C "$src" -xf -
fi

# -- another version, for upgrade tests
if [ -n "${SOCKACT_DEB_VERSION:-}" ]; then
	version=$SOCKACT_DEB_VERSION
	if [[ ! $version =~ ^[0-9][A-Za-z0-9.+~]*$ ]]; then
		echo "build-deb: SOCKACT_DEB_VERSION=$version: want a native version such as 0.1.1 (no dash)" >&2
		exit 2
	fi
	sed -i "s/^__version__ = .*/__version__ = \"$version\"/" "$src/sockact/__init__.py"
	maintainer=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Maintainer)
	{
		printf 'sockact (%s) unstable; urgency=medium\n\n  * Rebuild of %s as %s.\n\n -- %s  %s\n\n' \
			"$version" "$(dpkg-parsechangelog -l "$src/debian/changelog" -S Version)" "$version" \
			"$maintainer" "$(date -R)"
		cat "$src/debian/changelog"
	} >"$work/changelog"
	mv "$work/changelog" "$src/debian/changelog"
fi

# -- build dependencies
cd "$src"
if ! unmet=$(dpkg-checkbuilddeps 2>&1); then
	if [ "$(id -u)" != 0 ]; then
		echo "build-deb: $unmet" >&2
		echo "build-deb: run as root to install them with apt, or: sudo apt-get build-dep $repo" >&2
		exit 1
	fi
	echo "build-deb: installing build dependencies with apt"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get build-dep -y -qq "$src" >/dev/null
fi

# -- build
dpkg-buildpackage -us -uc >"$work/build.log" 2>&1 || {
	tail -n 60 "$work/build.log" >&2
	echo "build-deb: dpkg-buildpackage failed (last lines above)" >&2
	exit 1
}

for f in "$work"/sockact_*; do
	mv -f "$f" "$outdir/"
done
version=$(dpkg-parsechangelog -S Version)
deb=$outdir/sockact_${version}_all.deb
echo "built $deb ($(du -h "$deb" | cut -f1), $((SECONDS - started)) s)"
