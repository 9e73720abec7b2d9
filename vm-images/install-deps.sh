#!/usr/bin/env bash
# Installs what the berth VM path needs on a fresh Debian 12 machine:
# QEMU (x86_64, and aarch64 for the arm64 guest), the initramfs tools, the
# musl targets for the static guest agent (x86_64 native, aarch64 cross-built
# with Debian's aarch64 gcc, which also compiles ring's C code), Debian's
# arm64 package lists (the arm64 kernel and busybox are `apt-get download`ed,
# pinned), vhost-device-vsock (the userspace vsock backend QEMU talks to)
# and virtiofsd (the virtio-fs backend for file shares).
# Idempotent: every step checks first, so a second run takes about a second.
set -euo pipefail

SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO=sudo
need_apt=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

need_update=0
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    echo "install-deps: dpkg --add-architecture arm64"
    $SUDO dpkg --add-architecture arm64
    need_update=1
fi
for pkg in qemu-system-x86 qemu-system-arm busybox-static kmod zstd lz4 musl-tools binutils \
           gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
           libcap-ng-dev libseccomp-dev pkg-config; do
    have_pkg "$pkg" || need_apt+=("$pkg")
done
if ((need_update)) && ! ((${#need_apt[@]})); then
    $SUDO apt-get update -qq
fi
if ((${#need_apt[@]})); then
    echo "install-deps: apt-get install ${need_apt[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

for target in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
        echo "install-deps: rustup target add $target"
        rustup target add "$target"
    fi
done

cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
if ! have_cmd vhost-device-vsock && [[ ! -x $cargo_bin/vhost-device-vsock ]]; then
    echo "install-deps: cargo install vhost-device-vsock (about a minute)"
    cargo install --locked --quiet vhost-device-vsock
fi
if ! have_cmd virtiofsd && [[ ! -x $cargo_bin/virtiofsd ]]; then
    echo "install-deps: cargo install virtiofsd (about a minute)"
    cargo install --locked --quiet virtiofsd
fi
echo "install-deps: ok"
