#!/usr/bin/env bash
# The main job, as an operator runs it: build warden and the example plugins, make a
# demo publisher key on first run (kept in .demo/), pack and sign every example into
# .demo/plugins, and run `warden serve` in the foreground on examples/warden.json
# with the examples installed, approved and active. Plugin output and warden's own
# log go to this terminal; Ctrl-C stops every plugin cleanly.
#
# The demo policy grants each example what its manifest declares, except that
# `ticker` is approved without monitor:read, so its log shows an allowed call
# (kv.put) and a denied one (monitor.stats); `overreach` shows more denials
# (undeclared kv:write and monitor:read, net.dial with no egress list). `fetch`
# needs a web server to talk to, so it is installed but left inactive. Inspect with:
#   target/release/warden ctl --config examples/warden.json list
#   target/release/warden audit query .demo/state/audit.jsonl --decision deny
set -euo pipefail
cd "$(dirname "$0")/.."
demo=.demo
config=examples/warden.json
cargo build --release --workspace --quiet
# cargo puts the binaries under $CARGO_TARGET_DIR when that is set.
release=${CARGO_TARGET_DIR:-target}/release
warden=$release/warden
mkdir -p "$demo/trust/demo" "$demo/plugins"
if [ ! -f "$demo/demo.key" ]; then
  "$warden" keygen --out "$demo/demo"
fi
cp "$demo/demo.pub" "$demo/trust/demo/demo.pub"
ids=()
for manifest in examples/manifests/*.json; do
  name=$(basename "$manifest" .json)
  [ -x "$release/$name" ] || continue
  "$warden" pack --manifest "$manifest" --artifact "$release/$name" \
    --key "$demo/demo.key" --out "$demo/plugins/$name" >/dev/null
  ids+=("$name")
done
# Its own session, so a terminal's Ctrl-C reaches only this script, which turns it
# into SIGTERM for warden: plugins then get a graceful `shutdown`.
setsid "$warden" serve --config "$config" &
pid=$!
stop() { kill -TERM "$pid" 2>/dev/null || true; }
trap stop INT TERM EXIT
ctl() { "$warden" ctl --config "$config" "$@"; }
field() { ctl --json status "$1" | sed -n "s/^  \"$2\": \"\(.*\)\",\$/\1/p"; }
for _ in $(seq 100); do ctl list >/dev/null 2>&1 && break; sleep 0.1; done
for id in "${ids[@]}"; do
  [ "$(field "$id" status)" = verified ] && ctl install "$id" >/dev/null
  if [ "$(field "$id" policy)" != approved ]; then
    case "$id" in
      ticker) ctl policy approve "$id" --grant kv:read,kv:write >/dev/null ;;
      *) ctl policy approve "$id" >/dev/null ;;
    esac
  fi
  status=$(field "$id" status)
  # fetch does one request and exits: a one-shot for `warden run` (a supervised
  # plugin that keeps exiting ends up `failed`). It stays installed.
  if [ "$id" = fetch ]; then
    [ "$status" = active ] && ctl disable fetch >/dev/null
    continue
  fi
  [ "$status" = active ] || ctl activate "$id" >/dev/null
done || true
sleep 1
ctl list || true
echo "warden: serving; Ctrl-C stops every plugin and exits" >&2
wait "$pid" || true
wait "$pid" 2>/dev/null || true
