#!/usr/bin/env bash
# Quick start 1: install what is missing, then bring up the default lab (the seed's cluster).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
exec "${NETLAB_VENV:-$ROOT/.venv}/bin/netlab" up "$@"
