#!/usr/bin/env bash
# Installs cargo-fuzz, which tests/fuzzcheck uses to build the fuzz targets in fuzz/ and run each
# briefly over its seed corpus. Quiet, and a no-op when it is already there.
set -euo pipefail
if cargo fuzz --version >/dev/null 2>&1; then
    exit 0
fi
cargo install cargo-fuzz --version 0.13.2 --locked --quiet
