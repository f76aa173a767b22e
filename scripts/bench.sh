#!/usr/bin/env bash
# Benchmarks (issue 8): install what they need, then run `python -m bench.run "$@"`.
#   sudo scripts/bench.sh             # full run (N = 100 and 1,000; 3 and 10 workers)
#   sudo scripts/bench.sh --quick     # N = 100 only
#   sudo scripts/bench.sh --only proxy,latency
# Writes bench/results/*.json and regenerates docs/performance.md. Not part of the tests.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${NETLAB_VENV:-$ROOT/.venv}"
"$ROOT/scripts/setup.sh"

# Baselines: Mininet (its Python API under Debian's python3) and iperf3. No recommends:
# Mininet would pull in Open vSwitch, and the bench uses its LinuxBridge switch.
missing=()
command -v mn >/dev/null 2>&1 || missing+=(mininet)
command -v iperf3 >/dev/null 2>&1 || missing+=(iperf3)
command -v brctl >/dev/null 2>&1 || missing+=(bridge-utils)
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
"$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/bench/requirements.txt"

cd "$ROOT"
exec "$VENV/bin/python" -m bench.run "$@"
