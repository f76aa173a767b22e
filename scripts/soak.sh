#!/usr/bin/env bash
# Reliability soak (issue 18): the long version of tests/faults.
#   sudo scripts/soak.sh                      # 100 up/down cycles, 100 kills per family
#   sudo scripts/soak.sh --cycles 5 --kills 5 # a few minutes
# Families: up/down cycles, kill -9 of `up` at random points (then down, or up to repair),
# kill -9 of a random daemon under a curl loop (then up to repair), hostile input files.
# Writes docs/reliability.md (trials, failures, leaks per family). Not part of the tests.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${NETLAB_VENV:-$ROOT/.venv}"
[ -x "$VENV/bin/python" ] || "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "$VENV/bin/python" "$ROOT/scripts/soak.py" "$@"
