#!/usr/bin/env bash
# Build the tiny QEMU test guest into target/test-guest/ (idempotent; quick when built):
#   vmlinuz            Debian 12's cloud kernel (vgacon, i8042, atkbd built in)
#   initramfs.cpio.gz  busybox-static; /init prints SMOKE-GUEST-READY on tty1 and ttyS0
#                      and runs a shell on each.
# Needs: apt-get (download only, no root), dpkg-deb, busybox-static, cpio, gzip.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/target/test-guest"
mkdir -p "$out"
version=1 # bump when /init changes

if [ -s "$out/vmlinuz" ] && [ -s "$out/initramfs.cpio.gz" ] && [ "$(cat "$out/version" 2>/dev/null)" = "$version" ]; then
  exit 0
fi

busybox="$(command -v busybox || echo /bin/busybox)"
[ -x "$busybox" ] || { echo "build-test-guest: $busybox missing: run scripts/setup-debian.sh" >&2; exit 1; }
command -v cpio >/dev/null || { echo "build-test-guest: cpio missing: run scripts/setup-debian.sh" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp" # apt-get download runs as _apt when it can

if [ ! -s "$out/vmlinuz" ]; then
  # The newest linux-image-6.1.0-N-cloud-amd64 apt knows about.
  pkg="$(apt-cache pkgnames linux-image-6.1.0- | grep -E '^linux-image-6\.1\.0-[0-9]+-cloud-amd64$' |
    sort -t- -k4,4n | tail -1)"
  [ -n "$pkg" ] || { echo "build-test-guest: no linux-image-6.1.0-*-cloud-amd64 in apt: run apt-get update" >&2; exit 1; }
  echo "build-test-guest: downloading $pkg" >&2
  (cd "$tmp" && apt-get download -q "$pkg" >&2)
  dpkg-deb -x "$tmp"/linux-image-*.deb "$tmp/kernel"
  cp "$tmp"/kernel/boot/vmlinuz-* "$out/vmlinuz.part"
  mv "$out/vmlinuz.part" "$out/vmlinuz"
fi

init="$tmp/initramfs"
mkdir -p "$init"/{bin,dev,proc,sys,tmp,root}
cp "$busybox" "$init/bin/busybox"
for applet in sh mount setsid printf cat echo ls sleep; do
  ln -s busybox "$init/bin/$applet"
done
cat > "$init/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
export PATH=/bin HOME=/root PS1='guest# '
printf '\033[?25l' > /dev/tty1
echo SMOKE-GUEST-READY > /dev/tty1
echo SMOKE-GUEST-READY > /dev/ttyS0
setsid sh -c 'exec sh </dev/tty1 >/dev/tty1 2>&1' &
setsid sh -c 'exec sh </dev/ttyS0 >/dev/ttyS0 2>&1' &
while true; do sleep 3600; done
INIT
chmod 755 "$init/init"
(cd "$init" && find . | cpio -o -H newc --quiet | gzip -9) > "$out/initramfs.cpio.gz.part"
mv "$out/initramfs.cpio.gz.part" "$out/initramfs.cpio.gz"
echo "$version" > "$out/version"
echo "build-test-guest: ok ($out)" >&2
