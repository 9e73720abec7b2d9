#!/usr/bin/env bash
# Installs everything berth's build and test suite need on a fresh Debian 12
# machine (run as root, or with sudo available). Idempotent and quick when
# everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO=sudo

# The engine's native tests: busybox-static builds the test images, iproute2
# makes the network namespaces, util-linux's `script` gives a real TTY,
# docker-registry serves pulls on loopback, docker-compose drives the engine
# like a compose user, nftables does NAT for bridge networks, inotify-tools
# and socat give the VM tests a real inotify watcher and UDP server;
# openssh-client is what `berth shell` runs (and the SSH tests drive);
# gcc and libc6-dev build hostile_paths.rs's static swapper.
need=()
for pkg in busybox-static iproute2 util-linux bsdextrautils docker-registry e2fsprogs nftables docker-compose inotify-tools socat openssh-client gcc libc6-dev; do
    have_pkg "$pkg" || need+=("$pkg")
done
if ((${#need[@]})); then
    echo "install-deps: apt-get install ${need[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# The VM path: QEMU, initramfs tools, musl target, vhost-device-vsock.
bash vm-images/install-deps.sh

# The macOS type-check: clippy for aarch64-apple-darwin needs only the
# target's standard library (nothing is linked, so no Apple SDK).
if ! rustup target list --installed 2>/dev/null | grep -qx aarch64-apple-darwin; then
    echo "install-deps: rustup target add aarch64-apple-darwin"
    rustup target add aarch64-apple-darwin
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
    echo "install-deps: cargo install cargo-nextest"
    cargo install --locked --quiet cargo-nextest
fi
# Fuzzing (scripts/fuzz.sh) needs a nightly toolchain; cargo-fuzz only then.
if rustup toolchain list 2>/dev/null | grep -q '^nightly' && ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "install-deps: cargo install cargo-fuzz"
    cargo install --locked --quiet cargo-fuzz
fi
if ! command -v docker >/dev/null 2>&1; then
    echo "install-deps: the docker CLI is missing; install the docker-cli package (the client only)" >&2
    $SUDO apt-get install -y -qq --no-install-recommends docker.io >/dev/null 2>&1 || true
    command -v docker >/dev/null 2>&1 || { echo "install-deps: could not install the docker CLI" >&2; exit 1; }
fi
# Testcontainers for Node, an outside client the engine tests drive
# (tests/node; versions pinned by its package-lock.json). Debian's nodejs
# when the machine has no node.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "install-deps: apt-get install nodejs npm"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi
if [[ ! -d tests/node/node_modules/testcontainers ]] || [[ tests/node/package-lock.json -nt tests/node/node_modules/.package-lock.json ]]; then
    echo "install-deps: npm ci in tests/node (Testcontainers for Node)"
    (cd tests/node && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
fi

# The docker-py regression tests (guest-agent/agent/tests/dockerpy.rs) run
# pytest files of tests/dockerpy/ with PyPI's docker-py as the client.
DOCKERPY_VENV=target/dockerpy-venv
if ! "$DOCKERPY_VENV/bin/python" -c 'import docker, pytest; assert docker.__version__ == "7.2.0"' 2>/dev/null; then
    echo "install-deps: python venv $DOCKERPY_VENV (docker==7.2.0, pytest)"
    have_pkg python3-venv || { $SUDO apt-get update -qq; DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv; }
    python3 -m venv "$DOCKERPY_VENV"
    "$DOCKERPY_VENV/bin/pip" install --quiet docker==7.2.0 pytest==7.4.2
fi

echo "install-deps: all dependencies present"
