#!/usr/bin/env bash
# The benchmark against the peers (or, with --signup, the signup's latency).
# ./scripts/bench.sh --help says how; results in bench/results/.
source "$(dirname "$0")/bootstrap.sh"

python -m bench.run "$@"
