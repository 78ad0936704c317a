#!/usr/bin/env bash
# Installs the official Standard Webhooks Python library, which whomp's event tests use to verify
# a delivery signed during a secret rotation the way a receiver would. Quiet, and a no-op when it
# is already there.
set -euo pipefail
if python3 -c 'import standardwebhooks' >/dev/null 2>&1; then
    exit 0
fi
python3 -m pip install --quiet 'standardwebhooks==1.1.0'
