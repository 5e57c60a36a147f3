#!/usr/bin/env bash
# Proves systemd/warden.service under a real systemd 252 as PID 1 (systemd-nspawn,
# ../shared/tools/systemd-boot/boot-check.sh): builds warden and the examples, packs
# and signs `ticker` with a demo key, installs the unit, sysusers.d and tmpfiles.d
# files, the packaged config and the bundle into the container, boots it, and
# checks from inside that warden is active as user `warden`, drives it with
# `warden ctl` (install, approve, activate), and sees the plugin running and its
# host calls allowed (kv.put) and denied (monitor.stats) in the journal; then it
# reloads (ExecReload) and reports `systemd-analyze security` for the unit.
# Slow (a container boot, ~1 min the first time): not part of .ci/run.
# Needs root and debootstrap/systemd-container (installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
tools=${BOOT_TOOLS:-$repo/../shared/tools/systemd-boot}
if ! command -v systemd-nspawn >/dev/null || ! command -v debootstrap >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq systemd-container debootstrap >/dev/null
fi
[ -d /var/tmp/warden-nspawn-root ] || "$tools/make-root.sh"
cargo build --release --workspace --quiet
# cargo puts the binaries under $CARGO_TARGET_DIR when that is set.
release=${CARGO_TARGET_DIR:-target}/release
warden=$release/warden
key=$(mktemp -d /var/tmp/warden-sdcheck-key.XXXXXX)
extra=$(mktemp -d /var/tmp/warden-sdcheck-extra.XXXXXX)
trap 'rm -rf "$key" "$extra"' EXIT
"$warden" keygen --out "$key/demo" >/dev/null
install -D -m 0755 "$warden" "$extra/usr/bin/warden"
install -D -m 0644 systemd/warden.json "$extra/etc/warden/warden.json"
install -D -m 0644 "$key/demo.pub" "$extra/etc/warden/trust/demo/demo.pub"
install -D -m 0644 systemd/warden.sysusers "$extra/usr/lib/sysusers.d/warden.conf"
install -D -m 0644 systemd/warden.tmpfiles "$extra/usr/lib/tmpfiles.d/warden.conf"
mkdir -p "$extra/var/lib/warden/plugins"
"$warden" pack --manifest examples/manifests/ticker.json --artifact "$release/ticker" \
  --key "$key/demo.key" --out "$extra/var/lib/warden/plugins/ticker" >/dev/null
chmod -R a+rX "$extra/var/lib/warden/plugins" "$extra/etc/warden"

read -r -d '' check <<'EOS' || true
set -e
w() { echo "# warden ctl $*"; warden ctl "$@"; }
for i in $(seq 50); do warden ctl list >/dev/null 2>&1 && break; sleep 0.2; done
echo "# ps"; ps -o user,pid,args -C warden
w list
w install ticker
w policy approve ticker --grant kv:read,kv:write >/dev/null
w activate ticker >/dev/null
for i in $(seq 50); do warden ctl --json status ticker | grep -q '"runtime": "running"' && break; sleep 0.2; done
sleep 3
w list
w policy show ticker
w stats ticker
echo "# systemctl reload warden"; systemctl reload warden
sleep 1
w list
echo "# journal"
journalctl -u warden --no-pager -o cat | grep -E 'plugin=ticker|READY|reload|serving' | head -20
journalctl -u warden --no-pager -o cat | grep -q 'plugin=ticker stdout: tick [0-9]*: kv.put allowed'
journalctl -u warden --no-pager -o cat | grep -q 'monitor.stats denied'
warden ctl --json status ticker | grep -q '"runtime": "running"'
systemctl show warden -p User -p NRestarts -p WatchdogUSec -p StatusText
echo "# systemd-analyze security"
systemd-analyze security --offline=yes /etc/systemd/system/warden.service | tail -1
echo CHECK-OK
EOS
out=$(mktemp)
CHECK_CMD="$check" "$tools/boot-check.sh" systemd/warden.service "$extra" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ] || ! grep -q '^CHECK-OK' "$out" || ! grep -q 'CHECK_CMD rc=0' "$out"; then
  echo "systemd-check: FAIL (boot-check rc=$rc)" >&2
  rm -f "$out"
  exit 1
fi
rm -f "$out"
echo "systemd-check: PASS"
