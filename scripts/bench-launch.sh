#!/bin/sh
# Runs the launch-latency benchmark (release profile), installing bubblewrap for
# the reference measurement when it is missing. Needs root for apt-get only.
set -eu
cd "$(dirname "$0")/.."
if ! command -v bwrap >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq bubblewrap
    else
        echo "bwrap is missing; install bubblewrap (apt-get install bubblewrap)" >&2
    fi
fi
exec cargo bench --bench launch "$@"
