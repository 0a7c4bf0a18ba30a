#!/usr/bin/env bash
# Build the German console keymap for the QEMU test guest (idempotent):
#   target/test-guest/de.bmap   kbd's de-latin1 keymap (the console twin of XKB `de`, which
#                               smoke's `de` layout table follows) in the binary format that
#                               busybox `loadkmap` reads ("bkeymap" + key tables).
# `loadkeys -b` compiles a keymap to that format on stdout without touching any console, so
# this runs anywhere (no tty, no root). The keymap source comes from Debian's console-data:
# /usr/share/keymaps when it is installed, else its package is downloaded (apt-get download,
# no root) and unpacked here, so the build machine's own console setup is never changed.
# Needs: loadkeys (Debian package kbd, installed by scripts/setup-debian.sh), apt-get, dpkg-deb.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/target/test-guest"
mkdir -p "$out"
# One builder at a time: tests running in parallel may call this script together.
exec 9>"$out/.build-de-keymap.lock"
flock 9
[ -s "$out/de.bmap" ] && exit 0

loadkeys="$(command -v loadkeys || echo /bin/loadkeys)"
[ -x "$loadkeys" ] || { echo "build-de-keymap: loadkeys missing: run scripts/setup-debian.sh (package kbd)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp" # apt-get download runs as _apt when it can

map=/usr/share/keymaps/i386/qwertz/de-latin1.kmap.gz
if [ ! -s "$map" ]; then
  echo "build-de-keymap: downloading console-data" >&2
  (cd "$tmp" && apt-get download -q console-data >&2)
  dpkg-deb -x "$tmp"/console-data_*.deb "$tmp/console-data"
  # includes (qwertz-layout, linux-with-alt-and-altgr, euro) are found next to the map
  map="$tmp/console-data/usr/share/keymaps/i386/qwertz/de-latin1.kmap.gz"
fi
"$loadkeys" -b -q "$map" > "$out/de.bmap.part"
[ "$(head -c 7 "$out/de.bmap.part")" = "bkeymap" ] || { echo "build-de-keymap: not a binary keymap" >&2; exit 1; }
mv "$out/de.bmap.part" "$out/de.bmap"
echo "build-de-keymap: ok ($out/de.bmap)" >&2
