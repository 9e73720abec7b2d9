#!/usr/bin/env python3
"""Checks the dependency and `unsafe` rules of ARCHITECTURE.md ("Layers and rules").

1. Workspace crates depend only on the workspace crates the picture allows
   (normal dependencies; dev-dependencies are free).
2. Some external crates are banned from some crates: the engine knows
   nothing about HTTP, the API layer nothing about namespaces, proto does no
   I/O, and host crates link no ring, aws-lc or guest code.
3. `unsafe_code` is re-allowed (`allow`/`expect`) only under the listed paths.
4. Engine modules point one way: `image/` knows nothing of containers.

Prints each violation with what to do, exits 1 when there is one.
"""

import json
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

# crate -> workspace crates it may depend on (normal dependencies only).
ALLOWED = {
    "berth-proto": set(),
    "berth-engine": set(),
    "berth-dockerapi": {"berth-engine"},
    "berth-guest": {"berth-engine", "berth-dockerapi", "berth-proto"},
    "berth-instance": set(),
    "berth-template": {"berth-instance"},
    "berth-forward": {"berth-proto"},
    "berth-driver": {"berth-forward", "berth-proto"},
    "berth-hostagent": {"berth-driver", "berth-forward", "berth-instance", "berth-proto", "berth-template"},
    "berth-cli": {"berth-driver", "berth-forward", "berth-hostagent", "berth-instance", "berth-proto",
                  "berth-template", "berth-vm-images"},
    "berth-vm-images": set(),
    "berth-test-support": set(),
    "berth-e2e": {"berth-driver", "berth-forward", "berth-instance", "berth-proto", "berth-test-support",
                  "berth-vm-images"},
    "berth-bench": {"berth-test-support"},
}

HOST = ["berth-instance", "berth-template", "berth-forward", "berth-driver", "berth-hostagent", "berth-cli"]
# crate -> external crates it must not depend on (directly), with the reason.
BANNED = {
    "berth-engine": ({"axum", "hyper", "hyper-util", "http-body-util"}, "the engine knows nothing about HTTP"),
    "berth-dockerapi": ({"nix", "rustix", "caps", "rtnetlink", "seccompiler"},
                        "the API layer knows nothing about namespaces or system calls: call the engine"),
    "berth-proto": ({"tokio", "nix", "rustix", "libc"}, "proto is pure: no I/O"),
}
for crate in HOST:
    BANNED[crate] = ({"ring", "aws-lc-rs", "aws-lc-sys", "russh", "berth-engine", "berth-dockerapi", "berth-guest"},
                     "host crates must build for macOS without a C toolchain and link no guest code")

# Paths (prefixes, relative to the repo root) where `unsafe_code` may be re-allowed.
UNSAFE_OK = [
    "host/driver/src/vz/macos/",
    "guest-agent/engine/src/runtime/",
    "guest-agent/engine/src/container/",  # the pty window-size ioctl
    "guest-agent/engine/src/fsutil/",
    "guest-agent/agent/src/ssh/",
    "bench/",
    "tests/fuzz/",
]


def main() -> int:
    meta = json.loads(subprocess.check_output(
        ["cargo", "metadata", "--format-version", "1", "--no-deps", "--locked"], cwd=ROOT))
    problems = []
    workspace = {p["name"] for p in meta["packages"]}
    for pkg in meta["packages"]:
        name = pkg["name"]
        if name not in ALLOWED:
            problems.append(f"{name}: a new workspace crate; add it to ALLOWED in scripts/check-layers.py "
                            "and to the picture in ARCHITECTURE.md")
            continue
        normal = {d["name"] for d in pkg["dependencies"] if d["kind"] is None}
        required = {d["name"] for d in pkg["dependencies"] if d["kind"] is None and not d.get("optional")}
        for dep in sorted((normal & workspace) - ALLOWED[name]):
            problems.append(f"{name} depends on {dep}, which ARCHITECTURE.md's picture does not allow")
        banned, why = BANNED.get(name, (set(), ""))
        # An optional dependency behind a named feature (proto's `tokio`
        # adapters) is allowed; what the crate always links is not.
        for dep in sorted(required & banned):
            problems.append(f"{name} depends on {dep}: {why}")

    pattern = re.compile(r"(allow|expect)\s*\(\s*unsafe_code")
    for path in sorted(ROOT.rglob("*.rs")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("target/") or "/target/" in rel:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if pattern.search(text) and not any(rel.startswith(p) for p in UNSAFE_OK):
            problems.append(f"{rel}: re-allows unsafe_code outside the places ARCHITECTURE.md lists")
        if rel.startswith("guest-agent/engine/src/image/") and re.search(r"crate::container\b", text):
            problems.append(f"{rel}: image/ uses crate::container; images know nothing of containers")

    for p in problems:
        print(f"check-layers: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"check-layers: {len(meta['packages'])} crates follow the dependency and unsafe rules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
