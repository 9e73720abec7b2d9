#!/usr/bin/env bash
# Starts berth from a source checkout on a fresh Linux machine: installs
# what is missing, builds the `berth` CLI, and runs `berth start`, which
# builds the guest image when it is missing, boots the instance and prints
# how to point `docker` at it. Extra arguments go to `berth start`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --locked -p berth-cli
exec target/release/berth start "$@"
