#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test of every workspace member.
# Under CI (CI=true) a test that would skip for a missing kernel feature or tool fails
# instead (WARDEN_TEST_STRICT=1).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
if [ "${CI:-}" = "true" ]; then export WARDEN_TEST_STRICT=1; fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
