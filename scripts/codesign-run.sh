#!/usr/bin/env bash
# Cargo runner on macOS (.cargo/config.toml): signs the binary cargo is about
# to run with the Virtualization.framework entitlement (ad hoc, or with
# BERTH_CODESIGN_IDENTITY), then runs it with its arguments. Without it,
# every `cargo test`/`cargo run` of code that creates a VM fails with
# "The process doesn't have the com.apple.security.virtualization entitlement".
set -euo pipefail
binary=$1
entitlements="$(cd "$(dirname "$0")/.." && pwd)/host/cli/macos/berth.entitlements"
if [[ $(uname -s) == Darwin ]]; then
    if ! codesign --force --sign "${BERTH_CODESIGN_IDENTITY:--}" --entitlements "$entitlements" "$binary" 2>/tmp/berth-codesign.$$; then
        echo "codesign-run: signing $binary with $entitlements failed:" >&2
        cat /tmp/berth-codesign.$$ >&2
        rm -f /tmp/berth-codesign.$$
        exit 1
    fi
    rm -f /tmp/berth-codesign.$$
fi
exec "$@"
