#!/usr/bin/env bash
# Build the tiny QEMU test guests into target/test-guest/ (idempotent; quick when built).
#
#   scripts/build-test-guest.sh [VARIANT...]     (default: default)
#
# Shared by every variant:
#   vmlinuz            Debian 12's cloud kernel (vgacon, i8042, atkbd built in)
#   kernel-package     the kernel package it came from (modules are taken from the same one)
# Variants (one initramfs each; all are busybox-static with /init):
#   default  initramfs.cpio.gz      prints SMOKE-GUEST-READY on tty1 and ttyS0, runs a shell on each
#   ssh      initramfs-ssh.cpio.gz  the default guest plus virtio-net (static 10.0.2.15/24 for
#                                   QEMU user networking) and dropbear on port 22 for root, with
#                                   host key ssh-host-key.pub (fixed per build). The authorized key
#                                   comes from SMOKE_GUEST_AUTHORIZED_KEY (a .pub file) at build
#                                   time and/or the kernel command line:
#                                   smoke.ssh_key=TYPE,BASE64 (the key line with its space as a comma).
#                                   Prints SMOKE-SSH-READY on ttyS0 when dropbear listens; the
#                                   ACPI power button (QMP system_powerdown) powers it off.
#   panic    initramfs-panic.cpio.gz  /init prints SMOKE-PANIC-GUEST lines on ttyS0 and exits:
#                                   the kernel panics ("Attempted to kill init"), a BOOT-FAILED boot
#   hang     initramfs-hang.cpio.gz   /init prints a few SMOKE-HANG-GUEST lines on ttyS0, then
#                                   sleeps forever without a word: a STALLED boot
# To add a variant: write variant_NAME (it fills "$init" after common_root) and list it in VARIANTS.
# Needs: apt-get (download only, no root), dpkg-deb, busybox-static, cpio, gzip; dropbear-bin for ssh.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/target/test-guest"
mkdir -p "$out"
# Tests in one binary run in parallel and each may call this script: one builder at a time
# (the others wait, then find the guest built).
exec 9>"$out/.build-test-guest.lock"
flock 9
VARIANTS=(default ssh panic hang)
# Bump a variant's number when what it builds changes.
declare -A VERSION=([default]=2 [ssh]=2 [panic]=1 [hang]=1)

die() { echo "build-test-guest: $*" >&2; exit 1; }

busybox="$(command -v busybox || echo /bin/busybox)"
[ -x "$busybox" ] || die "$busybox missing: run scripts/setup-debian.sh"
command -v cpio >/dev/null || die "cpio missing: run scripts/setup-debian.sh"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp" # apt-get download runs as _apt when it can

initramfs_name() { if [ "$1" = default ]; then echo initramfs.cpio.gz; else echo "initramfs-$1.cpio.gz"; fi; }

# Download the kernel package once (the one vmlinuz came from, or the newest apt knows) into $tmp/kernel.
kernel_unpacked=""
unpack_kernel() {
  [ -n "$kernel_unpacked" ] && return 0
  local pkg
  pkg="$(cat "$out/kernel-package" 2>/dev/null || true)"
  if [ -z "$pkg" ] || [ ! -s "$out/vmlinuz" ]; then
    pkg="$(apt-cache pkgnames linux-image-6.1.0- | grep -E '^linux-image-6\.1\.0-[0-9]+-cloud-amd64$' |
      sort -t- -k4,4n | tail -1)"
  fi
  [ -n "$pkg" ] || die "no linux-image-6.1.0-*-cloud-amd64 in apt: run apt-get update"
  echo "build-test-guest: downloading $pkg" >&2
  (cd "$tmp" && apt-get download -q "$pkg" >&2) || die "cannot download $pkg (apt-get update?)"
  dpkg-deb -x "$tmp"/linux-image-*.deb "$tmp/kernel"
  if [ ! -s "$out/vmlinuz" ] || [ "$(cat "$out/kernel-package" 2>/dev/null)" != "$pkg" ]; then
    cp "$tmp"/kernel/boot/vmlinuz-* "$out/vmlinuz.part"
    mv "$out/vmlinuz.part" "$out/vmlinuz"
    echo "$pkg" > "$out/kernel-package"
  fi
  kernel_unpacked=1
}

# The base tree every variant shares: busybox with its applets, the usual mount points.
common_root() {
  rm -rf "$init"
  mkdir -p "$init"/{bin,sbin,dev,proc,sys,tmp,root,etc}
  cp "$busybox" "$init/bin/busybox"
  for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$init/bin/$applet"
  done
}

# The default guest's /init; variants add scripts to /etc/smoke-init.d (sourced before the banner).
default_init() {
  mkdir -p "$init/etc/smoke-init.d"
  cat > "$init/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
export PATH=/bin:/sbin HOME=/root PS1='guest# '
for hook in /etc/smoke-init.d/*.sh; do
  [ -r "$hook" ] && . "$hook"
done
printf '\033[?25l' > /dev/tty1
echo SMOKE-GUEST-READY > /dev/tty1
echo SMOKE-GUEST-READY > /dev/ttyS0
setsid sh -c 'exec sh </dev/tty1 >/dev/tty1 2>&1' &
setsid sh -c 'exec sh </dev/ttyS0 >/dev/ttyS0 2>&1' &
while true; do sleep 3600; done
INIT
  chmod 755 "$init/init"
}

variant_default() {
  default_init
}

variant_ssh() {
  command -v dropbear >/dev/null || die "dropbear missing: run scripts/setup-debian.sh (dropbear-bin)"
  default_init
  unpack_kernel
  local release
  release="$(ls "$tmp/kernel/lib/modules")"
  mkdir -p "$init/lib/modules"
  for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net \
    button evdev; do
    f="$(find "$tmp/kernel/lib/modules/$release" -name "$m.ko" | head -1)"
    [ -n "$f" ] || die "module $m.ko not in the kernel package"
    cp "$f" "$init/lib/modules/"
  done
  # dropbear and the shared libraries it links (glibc's NSS for files is built into libc)
  mkdir -p "$init/usr/sbin" "$init/etc/dropbear" "$init/root/.ssh" "$init/dev/pts"
  cp /usr/sbin/dropbear "$init/usr/sbin/dropbear"
  ldd /usr/sbin/dropbear | grep -oE '/[^ ]+' | while read -r lib; do
    mkdir -p "$init$(dirname "$lib")"
    cp -L "$lib" "$init$lib"
  done
  if [ ! -s "$out/ssh-host-key" ]; then
    rm -f "$out/ssh-host-key"
    dropbearkey -t ed25519 -f "$out/ssh-host-key" >/dev/null 2>&1
  fi
  dropbearkey -y -f "$out/ssh-host-key" | grep -E '^ssh-' > "$out/ssh-host-key.pub"
  cp "$out/ssh-host-key" "$init/etc/dropbear/dropbear_ed25519_host_key"
  echo 'root:x:0:0:root:/root:/bin/sh' > "$init/etc/passwd"
  echo 'root:x:0:' > "$init/etc/group"
  echo '/bin/sh' > "$init/etc/shells"
  : > "$init/root/.ssh/authorized_keys"
  if [ -n "${SMOKE_GUEST_AUTHORIZED_KEY:-}" ]; then
    cat "$SMOKE_GUEST_AUTHORIZED_KEY" >> "$init/root/.ssh/authorized_keys"
  fi
  chmod 700 "$init/root" "$init/root/.ssh"
  chmod 600 "$init/root/.ssh/authorized_keys"
  # the ACPI power button powers the guest off (QMP system_powerdown works)
  mkdir -p "$init/etc/acpi/PWRF"
  printf '#!/bin/sh\necho SMOKE-POWERDOWN > /dev/ttyS0\nsync\npoweroff -f\n' > "$init/etc/acpi/PWRF/00000080"
  chmod 755 "$init/etc/acpi/PWRF/00000080"
  cat > "$init/etc/smoke-init.d/50-ssh.sh" <<'HOOK'
# virtio-net, a static address for QEMU user networking, dropbear on :22, acpid for the
# power button (in the background)
(
  for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net \
    button evdev; do
    insmod /lib/modules/$m.ko
  done
  acpid -c /etc/acpi -l /tmp/acpid.log
  mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
  for arg in $(cat /proc/cmdline); do
    case "$arg" in
      smoke.ssh_key=*) echo "${arg#smoke.ssh_key=}" | tr ',' ' ' >> /root/.ssh/authorized_keys ;;
    esac
  done
  i=0
  while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  ifconfig lo 127.0.0.1 up
  ifconfig eth0 10.0.2.15 netmask 255.255.255.0 up
  route add default gw 10.0.2.2
  /usr/sbin/dropbear -s -E -p 22 2>/tmp/dropbear.log && echo SMOKE-SSH-READY > /dev/ttyS0
) &
HOOK
}

variant_panic() {
  cat > "$init/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t devtmpfs dev /dev
echo "SMOKE-PANIC-GUEST: init started" > /dev/ttyS0
echo "SMOKE-PANIC-GUEST: exiting PID 1" > /dev/ttyS0
exit 1
INIT
  chmod 755 "$init/init"
}

variant_hang() {
  cat > "$init/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t devtmpfs dev /dev
# keep the kernel quiet from here on: the console must stay silent
echo 1 > /proc/sys/kernel/printk
for i in 1 2 3; do
  echo "SMOKE-HANG-GUEST: starting service $i" > /dev/ttyS0
done
echo "SMOKE-HANG-GUEST: waiting for a root device that never comes" > /dev/ttyS0
while true; do sleep 3600; done
INIT
  chmod 755 "$init/init"
}

build_variant() {
  local variant="$1" file stamp
  declare -F "variant_$variant" >/dev/null || die "unknown variant '$variant' (variants: ${VARIANTS[*]})"
  file="$(initramfs_name "$variant")"
  stamp="${VERSION[$variant]}"
  if [ "$variant" = ssh ] && [ -n "${SMOKE_GUEST_AUTHORIZED_KEY:-}" ]; then
    stamp="$stamp-$(cksum < "$SMOKE_GUEST_AUTHORIZED_KEY" | cut -d' ' -f1)"
  fi
  if [ -s "$out/vmlinuz" ] && [ -s "$out/$file" ] && [ "$(cat "$out/version-$variant" 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  [ -s "$out/vmlinuz" ] || unpack_kernel
  init="$tmp/initramfs-$variant"
  common_root
  "variant_$variant"
  (cd "$init" && find . | cpio -o -H newc -R 0:0 --quiet | gzip -9) > "$out/$file.part"
  mv "$out/$file.part" "$out/$file"
  echo "$stamp" > "$out/version-$variant"
  echo "build-test-guest: $variant ok ($out/$file)" >&2
}

[ "$#" -gt 0 ] || set -- default
for v in "$@"; do
  build_variant "$v"
done
