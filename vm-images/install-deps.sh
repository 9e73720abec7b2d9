#!/usr/bin/env bash
# Installs what the berth VM path needs on a fresh Debian 12 machine:
# QEMU, the initramfs tools, the musl target for the static guest agent,
# vhost-device-vsock (the userspace vsock backend QEMU talks to) and
# virtiofsd (the virtio-fs backend for file shares).
# Idempotent: every step checks first, so a second run takes about a second.
set -euo pipefail

need_apt=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

for pkg in qemu-system-x86 busybox-static kmod zstd lz4 musl-tools binutils \
           libcap-ng-dev libseccomp-dev pkg-config; do
    have_pkg "$pkg" || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
    echo "install-deps: apt-get install ${need_apt[*]}"
    SUDO=""
    [[ $(id -u) -eq 0 ]] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    echo "install-deps: rustup target add x86_64-unknown-linux-musl"
    rustup target add x86_64-unknown-linux-musl
fi

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
