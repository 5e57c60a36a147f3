#!/usr/bin/env bash
# Installs the Debian packages warden's tests, demo and benchmarks use, when missing:
#   minisign    interop tests (stock minisign signs and verifies warden bundles)
#   bubblewrap  the launch benchmark's peer
#   gcc         builds the hostile-plugin C programs in tests/hostile
# Idempotent and quiet when everything is present.
set -euo pipefail
need=()
command -v minisign >/dev/null 2>&1 || need+=(minisign)
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
command -v cc >/dev/null 2>&1 || need+=(gcc)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/deps.sh: missing ${need[*]}; install them (apt-get install ${need[*]}) or run as root" >&2
  exit 1
fi
echo "scripts/deps.sh: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
