#!/usr/bin/env bash
# Quick start 2: install what is missing, then run the whole test suite (unit + real kernel).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
cd "$ROOT"
set +e
"${NETLAB_VENV:-$ROOT/.venv}/bin/python" -m pytest -p no:cacheprovider -ra "$@" tests
rc=$?
set -e
# pytest exits 5 when it collected nothing: that is a failure here, not a pass.
[ "$rc" -eq 5 ] && echo "test.sh: no tests were collected" >&2
exit "$rc"
