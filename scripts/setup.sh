#!/usr/bin/env bash
# Install whatever netlab needs that is missing: Debian packages, a virtualenv with the
# project (./.venv), the small native helpers (pause, hello), and /usr/local/bin/netlab.
# Idempotent; run as root. Used by lab-up.sh, test.sh, the Vagrantfile and CI.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${NETLAB_VENV:-$ROOT/.venv}"

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: must run as root (it installs packages and creates namespaces): sudo $0" >&2
    exit 1
fi

# binary -> Debian package that provides it
declare -A NEED=(
    [ip]=iproute2 [bridge]=iproute2 [iptables-legacy]=iptables [etcd]=etcd-server
    [etcdctl]=etcd-client [conntrack]=conntrack [curl]=curl [brctl]=bridge-utils
    [tcpdump]=tcpdump [route]=net-tools [ping]=iputils-ping [sysctl]=procps
    [nsenter]=util-linux [gcc]=gcc [python3]=python3 [dot]=graphviz
)
missing=()
for bin in "${!NEED[@]}"; do
    command -v "$bin" >/dev/null 2>&1 || missing+=("${NEED[$bin]}")
done
[ -e /usr/include/stdio.h ] || missing+=(libc6-dev)
if [ ${#missing[@]} -gt 0 ]; then
    pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
    echo "setup: installing $pkgs"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
fi

# Debian's etcd-server starts a system-wide etcd under systemd; the lab runs its own.
if [ -d /run/systemd/system ] && systemctl is-enabled etcd >/dev/null 2>&1; then
    echo "setup: stopping and disabling the system etcd service (netlab runs its own etcd)"
    systemctl disable --now etcd >/dev/null 2>&1 || true
fi

if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup: python3 >= 3.11 is required (found $(python3 --version))" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating virtualenv $VENV"
    python3 -m venv "$VENV" 2>/dev/null || {
        apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$VENV"; }
fi
stamp="$VENV/.netlab-installed"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    echo "setup: installing netlab and its Python dependencies into $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT[test]"
    touch "$stamp"
fi

# Native helpers: tiny static programs (a pod's pause must stay under 1 MiB of RSS).
for src in "$ROOT"/netlab/native/*.c; do
    [ -e "$src" ] || continue
    out="$VENV/bin/netlab-$(basename "$src" .c)"
    if [ ! -x "$out" ] || [ "$src" -nt "$out" ]; then
        gcc -Os -static -Wall -o "$out" "$src"
    fi
done

ln -sf "$VENV/bin/netlab" /usr/local/bin/netlab
