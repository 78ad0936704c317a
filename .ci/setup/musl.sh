#!/usr/bin/env bash
# Installs what the static build check (tests/checks, deploy/build-static.sh) needs: Debian's
# musl-tools (musl-gcc, the static musl C library) and the Rust target x86_64-unknown-linux-musl.
# Idempotent and quiet: does nothing, and touches no network, when both are there.
set -euo pipefail

target=x86_64-unknown-linux-musl
if ! command -v musl-gcc >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    echo "installing: musl-tools"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends musl-tools >/dev/null
fi
if ! rustup target list --installed | grep -qx "$target"; then
    echo "installing: Rust target $target"
    rustup target add "$target"
fi
command -v musl-gcc >/dev/null || { echo "musl.sh: musl-gcc still missing" >&2; exit 1; }
rustup target list --installed | grep -qx "$target" ||
    { echo "musl.sh: Rust target $target still missing" >&2; exit 1; }
