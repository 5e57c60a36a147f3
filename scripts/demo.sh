#!/usr/bin/env bash
# The main job on an embedded default: build warden and the example plugins, make a
# demo publisher key on first run (kept in .demo/), pin it, pack and sign every
# example, verify each bundle, and run each one confined with its host calls served
# and audited. The audit log is checked and summarised at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
demo=.demo
cargo build --release --workspace --quiet
warden=target/release/warden
mkdir -p "$demo/trust/demo" "$demo/bundles"
if [ ! -f "$demo/demo.key" ]; then
  "$warden" keygen --out "$demo/demo"
fi
cp "$demo/demo.pub" "$demo/trust/demo/demo.pub"
for manifest in examples/manifests/*.json; do
  name=$(basename "$manifest" .json)
  "$warden" pack --manifest "$manifest" --artifact "target/release/$name" \
    --key "$demo/demo.key" --out "$demo/bundles/$name" >/dev/null
  "$warden" verify "$demo/bundles/$name" --trust "$demo/trust"
done
for name in echo kv-counter overreach; do
  echo "--- warden run $name"
  "$warden" run "$demo/bundles/$name" --trust "$demo/trust" --state-dir "$demo/state" 2>&1
done
echo "--- audit"
"$warden" audit verify "$demo/state/audit.log"
"$warden" audit query "$demo/state/audit.log" --kind host_call --last 12
