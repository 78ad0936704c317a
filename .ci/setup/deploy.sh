#!/usr/bin/env bash
# Installs the tools the deploy/ checks (tests/checks) use: systemd-analyze, systemd-sysusers and
# systemd-tmpfiles (package systemd), promtool (package prometheus), curl for the walk-through and
# file for the static build check. Idempotent: does nothing, and touches no network, when all are
# already on PATH.
set -euo pipefail

need=()
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v file >/dev/null 2>&1 || need+=(file)
if [ "${#need[@]}" -eq 0 ]; then
    echo "deploy tools present: systemd-analyze, promtool, curl, file"
    exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
echo "installing: ${need[*]}"
$sudo apt-get update -qq
# No recommends: promtool is all we need from prometheus, not its exporters or web assets.
# A policy-rc.d answering 101 keeps the package's postinst from starting a prometheus service
# on the CI host; one already present is left alone.
policy=/usr/sbin/policy-rc.d
added_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    added_policy=1
fi
status=0
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || status=$?
if [ -n "$added_policy" ]; then
    $sudo rm -f "$policy"
fi
[ "$status" -eq 0 ]
for tool in systemd-analyze promtool curl file; do
    command -v "$tool" >/dev/null || { echo "deploy.sh: $tool still missing" >&2; exit 1; }
done
echo "deploy tools installed: ${need[*]}"
