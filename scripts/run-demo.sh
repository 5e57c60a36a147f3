#!/usr/bin/env bash
# A one-shot walkthrough with `warden run` (the README's first command, scripts/demo.sh,
# runs the same examples supervised by `warden serve`): build, make a demo key on
# first run (kept in .demo/), pack and sign every example, verify each bundle, run
# each once confined with its host calls served and audited, then check and
# summarise the audit log.
set -euo pipefail
cd "$(dirname "$0")/.."
demo=.demo
cargo build --release --workspace --quiet
# cargo puts the binaries under $CARGO_TARGET_DIR when that is set.
release=${CARGO_TARGET_DIR:-target}/release
warden=$release/warden
mkdir -p "$demo/trust/demo" "$demo/bundles"
if [ ! -f "$demo/demo.key" ]; then
  "$warden" keygen --out "$demo/demo"
fi
cp "$demo/demo.pub" "$demo/trust/demo/demo.pub"
for manifest in examples/manifests/*.json; do
  name=$(basename "$manifest" .json)
  "$warden" pack --manifest "$manifest" --artifact "$release/$name" \
    --key "$demo/demo.key" --out "$demo/bundles/$name" >/dev/null
  "$warden" verify "$demo/bundles/$name" --trust "$demo/trust"
done
# The manifests make the examples long-running (--every N) for `warden serve`;
# arguments after `--` replace them for a single run.
run() { echo "--- warden run $*"; "$warden" run "$demo/bundles/$1" --trust "$demo/trust" --state-dir "$demo/run-state" -- "${@:2}" 2>&1; }
run echo hello from a sandbox
run kv-counter
run overreach
echo "--- audit"
"$warden" audit verify "$demo/run-state/audit.log"
"$warden" audit query "$demo/run-state/audit.log" --kind host_call --last 12
