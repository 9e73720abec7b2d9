#!/usr/bin/env bash
# Signs the `berth` binary with the Virtualization.framework entitlement
# (host/cli/macos/berth.entitlements). Run on a Mac after building:
#
#   cargo build --release -p berth-cli
#   scripts/codesign-macos.sh target/release/berth            # ad-hoc signature
#   BERTH_CODESIGN_IDENTITY="Developer ID Application: …" scripts/codesign-macos.sh target/release/berth
#
# The host agent is the same binary (`berth hostagent`), so one signature
# covers the process that creates the VM. Ad-hoc signing ("-") is enough to
# run locally; distribution needs a Developer ID identity and notarization.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(uname -s) != Darwin ]]; then
    echo "codesign-macos: codesign exists on macOS only" >&2
    exit 1
fi
binary=${1:-target/release/berth}
if [[ ! -f $binary ]]; then
    echo "codesign-macos: $binary does not exist; build it first (cargo build --release -p berth-cli)" >&2
    exit 1
fi
entitlements=host/cli/macos/berth.entitlements
identity=${BERTH_CODESIGN_IDENTITY:--}
options=()
# A real identity gets the hardened runtime (required for notarization).
[[ $identity == - ]] || options+=(--options runtime --timestamp)

# (The ${a[@]+...} form: macOS bash 3.2 treats an empty array as unset under set -u.)
codesign --force --sign "$identity" ${options[@]+"${options[@]}"} --entitlements "$entitlements" "$binary"
codesign --display --entitlements - "$binary"
codesign --verify --verbose=2 "$binary"
echo "codesign-macos: signed $binary (identity: $identity)"
