#!/usr/bin/env bash
# Install what smoke needs on Debian 12 (idempotent; installs only what is missing):
# a VNC desktop (TigerVNC Xvnc + openbox), the demo apps (galculator, xterm),
# OCR (tesseract), X tools used by the desktop backend and the tests, and QEMU
# with what scripts/build-test-guest.sh needs for the test guest.
set -euo pipefail

packages=(
  tigervnc-standalone-server tigervnc-tools   # Xvnc, vncpasswd
  openbox                                     # window manager of the local desktop
  x11-utils                                   # xprop: window manager readiness
  xdotool                                     # used by tests to inspect the desktop
  xterm galculator                            # demo apps
  ffmpeg                                      # tests grab screens with x11grab; recording benchmark
  fonts-dejavu-core                           # a monospace TrueType font for xterm
  tesseract-ocr tesseract-ocr-eng             # OCR
  chromium                                    # tests open the HTML reports in a real browser
  libxml2-utils                               # xmllint: tests validate JUnit XML against its schema
  python3-pip                                 # fetches the JUnit schema below
  openssh-server openssh-client               # SSH tests: a private sshd on loopback, ssh-keygen, ssh-agent
  x11-xserver-utils                           # xset: prepare_display turns screensaver and DPMS off
  procps                                      # pgrep/pkill for the cleanup routines
  busybox-static cpio                         # the QEMU test guest's initramfs (scripts/build-test-guest.sh)
  dropbear-bin                                # SSH server of the test guest's ssh variant
  kbd                                         # loadkeys -b: the guest's German keymap (scripts/build-de-keymap.sh)
  libssl-dev pkg-config                       # OpenSSL for VNC TLS (VeNCrypt, tls://, wss://)
  openssl                                     # tests make their own CA and certificates
  x11vnc websockify socat                     # RFB tests: libvncserver, websocket bridge, TLS-wrapping proxy
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# QEMU 10 from bookworm-backports: the machine ships qemu-utils 10 (qemu-img) from there, and
# Debian 12's own qemu-system-x86 7.2 conflicts with it (installing it would REMOVE qemu-img).
# Only these four packages come from backports; never `-t bookworm-backports` for everything.
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "setup: adding bookworm-backports as an apt source" >&2
    echo 'deb http://deb.debian.org/debian bookworm-backports main' |
      $SUDO tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
  fi
  echo "setup: installing QEMU from bookworm-backports" >&2
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
    qemu-system-x86/bookworm-backports qemu-system-common/bookworm-backports \
    qemu-system-data/bookworm-backports seabios/bookworm-backports
fi

# The Jenkins JUnit schema (junit-10.xsd, MIT) that the tests validate junit.xml
# against. It ships in pytest's source distribution on PyPI.
xsd_dir="$(dirname "$0")/../target/test-data"
if [ ! -s "$xsd_dir/junit-10.xsd" ]; then
  mkdir -p "$xsd_dir"
  tmp=$(mktemp -d)
  if python3 -m pip download --no-binary :all: --no-deps -q -d "$tmp" pytest==8.3.4 >&2; then
    tar -xzf "$tmp"/pytest-8.3.4.tar.gz -C "$tmp" pytest-8.3.4/testing/example_scripts/junit-10.xsd
    cp "$tmp"/pytest-8.3.4/testing/example_scripts/junit-10.xsd "$xsd_dir/junit-10.xsd"
  else
    echo "setup: could not fetch the JUnit schema (tests that validate junit.xml will say so)" >&2
  fi
  rm -rf "$tmp"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found: install Rust 1.95 or newer with rustup (https://rustup.rs)" >&2
  exit 1
fi
echo "setup: ok" >&2
