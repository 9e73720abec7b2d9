#!/usr/bin/env bash
# berth's whole test suite, as CI runs it: installs what is missing, then
# format check, lints (-D warnings), and every test (unit, component, the
# native engine driven by the real docker CLI, and the VM end-to-end tests).
# Needs root: the engine tests create namespaces, mounts and cgroups.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== layer rules (ARCHITECTURE.md)"
python3 scripts/check-layers.py

echo "== cargo clippy (-D warnings)"
cargo clippy --locked --workspace --all-targets --all-features -- -D warnings

# The macOS code (the vz driver) is type-checked, not run: there is no Mac
# here. Only the host crates: the guest side is Linux-only. Keep crates
# whose C build needs the Apple SDK (ring, aws-lc-sys) out of these crates'
# macOS dependency graph, or this check cannot build them.
echo "== cargo clippy --target aarch64-apple-darwin (host crates, -D warnings)"
rustup target add aarch64-apple-darwin
cargo clippy --locked --target aarch64-apple-darwin \
    -p berth-forward -p berth-driver -p berth-hostagent -p berth-cli \
    -p berth-instance -p berth-template -p berth-proto \
    --all-targets -- -D warnings

echo "== guest images (x86_64, and the arm64 one tests/e2e/tests/arm64.rs boots)"
cargo run -q --locked -p berth-cli -- build-image
cargo run -q --locked -p berth-cli -- build-image --arch aarch64
# The VM tests use these images instead of re-checking the builds themselves.
BERTH_IMAGE_DIR="$PWD/target/vm-images/$(cat target/vm-images/current)"
BERTH_AARCH64_IMAGE_DIR="$PWD/target/vm-images/$(cat target/vm-images/current-aarch64)"
export BERTH_IMAGE_DIR BERTH_AARCH64_IMAGE_DIR

# Each fuzz target for a few seconds (the corpus in tests/fuzz/corpus).
if cargo +nightly --version >/dev/null 2>&1; then
    echo "== fuzz (scripts/fuzz.sh, ${BERTH_FUZZ_SECONDS:-10} s per target)"
    bash scripts/fuzz.sh "${BERTH_FUZZ_SECONDS:-10}"
else
    echo "== fuzz: SKIPPED (no nightly toolchain: rustup toolchain install nightly)"
fi

echo "== cargo nextest"
cargo nextest run --locked --workspace --all-features --no-fail-fast "$@"
