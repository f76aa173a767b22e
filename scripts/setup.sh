#!/usr/bin/env bash
# Install whatever netlab needs that is missing: Debian packages, a virtualenv with the
# project (./.venv, or $NETLAB_VENV), the small native helpers (pause, hello, udpecho), and
# /usr/local/bin/netlab. Idempotent; run as root. Used by lab-up.sh, test.sh, the
# Vagrantfile, the Containerfile and CI.
#
#   scripts/setup.sh              everything above
#   scripts/setup.sh --service    also install and enable netlab.service (systemd hosts only):
#                                 `netlab up -f /etc/netlab/lab.yaml` at boot, `netlab down` at stop
#   scripts/setup.sh --venv-only  only the virtualenv and the helpers, with the compiler they
#                                 need (the Containerfile's build stage)
#
# The virtualenv is made usable by every user (so that `netlab --help` works without sudo
# and a real command says "must run as root"): directories 0755, and an interpreter that
# others can reach (a pyenv Python under /root is not; Debian's /usr/bin/python3 is).
set -euo pipefail
umask 022

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${NETLAB_VENV:-$ROOT/.venv}"
UNIT_SRC="$ROOT/scripts/netlab.service"
UNIT_DST=/etc/systemd/system/netlab.service
LAB_FILE=/etc/netlab/lab.yaml

service=0 venv_only=0
for arg in "$@"; do
    case "$arg" in
        --service) service=1 ;;
        --venv-only) venv_only=1 ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "setup.sh: unknown argument '$arg' (known: --service, --venv-only, --help)" >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: must run as root (it installs packages and creates namespaces): sudo $0 $*" >&2
    exit 1
fi
# Refuse before changing anything: the unit is only for hosts whose init is systemd.
if [ "$service" -eq 1 ] && [ ! -d /run/systemd/system ]; then
    echo "setup.sh: --service needs a host running systemd (/run/systemd/system is missing); start the lab with: netlab up -f FILE" >&2
    exit 1
fi

# others_reach PATH: can a user other than root open PATH (every directory above it o+x)?
others_reach() {
    local p
    p=$(readlink -f "$1") || return 1
    [ -r "$p" ] || return 1
    while [ "$p" != / ]; do
        p=$(dirname "$p")
        [ $(( 0$(stat -c %a "$p") & 01 )) -ne 0 ] || return 1
    done
}
# py_ok PY: Python >= 3.11 whose executable and standard library other users can reach.
py_new_enough() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }
py_ok() {
    py_new_enough "$1" || return 1
    others_reach "$("$1" -c 'import sys; print(sys.executable)')" \
        && others_reach "$("$1" -c 'import os, sys; print(os.path.dirname(os.__file__))')"
}

# Native helpers: tiny static programs (a pod's pause must stay under 1 MiB of RSS). They
# are compiled only when missing or older than their source, so an image that copies
# prebuilt ones (Containerfile) needs no compiler.
stale_helpers() {
    local src out
    for src in "$ROOT"/netlab/native/*.c; do
        [ -e "$src" ] || continue
        out="$VENV/bin/netlab-$(basename "$src" .c)"
        if [ ! -x "$out" ] || [ "$src" -nt "$out" ]; then echo "$src"; fi
    done
}

# binary -> Debian package that provides it
if [ "$venv_only" -eq 1 ]; then
    declare -A NEED=([python3]=python3)
else
    declare -A NEED=(
        [ip]=iproute2 [bridge]=iproute2 [iptables-legacy]=iptables [etcd]=etcd-server
        [etcdctl]=etcd-client [conntrack]=conntrack [curl]=curl [brctl]=bridge-utils
        [tcpdump]=tcpdump [route]=net-tools [ping]=iputils-ping [sysctl]=procps
        [nsenter]=util-linux [setsid]=util-linux [nft]=nftables [python3]=python3 [dot]=graphviz
        [kubectl]=kubernetes-client  # only when no kubectl is there (v1.32 on these machines)
        [nginx]=nginx                # `image: nginx` runs Debian's nginx in the pod (README: images)
    )
fi
missing=()
for bin in "${!NEED[@]}"; do
    command -v "$bin" >/dev/null 2>&1 || missing+=("${NEED[$bin]}")
done
if [ -n "$(stale_helpers)" ]; then
    command -v gcc >/dev/null 2>&1 || missing+=(gcc)
    [ -e /usr/include/stdio.h ] || missing+=(libc6-dev)
fi
if [ ${#missing[@]} -gt 0 ]; then
    pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
    echo "setup: installing $pkgs"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # No service may start on the host while installing (Debian's nginx would listen on the
    # host's port 80): policy-rc.d says "not now" to invoke-rc.d, then goes again.
    own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && own_policy=1
    fi
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
    [ "$own_policy" -eq 1 ] && rm -f /usr/sbin/policy-rc.d
fi

# Debian's nginx is a system service under systemd; in the lab it runs only inside pods.
if [ "$venv_only" -eq 0 ] && [ -d /run/systemd/system ] && systemctl is-enabled nginx >/dev/null 2>&1; then
    echo "setup: stopping and disabling the system nginx service (the lab runs nginx in pods only)"
    systemctl disable --now nginx >/dev/null 2>&1 || true
fi

# Debian's etcd-server starts a system-wide etcd under systemd; the lab runs its own.
if [ "$venv_only" -eq 0 ] && [ -d /run/systemd/system ] && systemctl is-enabled etcd >/dev/null 2>&1; then
    echo "setup: stopping and disabling the system etcd service (netlab runs its own etcd)"
    systemctl disable --now etcd >/dev/null 2>&1 || true
fi

# The interpreter: $NETLAB_PYTHON, else the first python3 >= 3.11 other users can run.
PY=""
for cand in ${NETLAB_PYTHON:-} "$(command -v python3 || true)" /usr/bin/python3; do
    [ -n "$cand" ] && [ -x "$cand" ] && py_ok "$cand" && { PY=$cand; break; }
done
if [ -z "$PY" ]; then
    for cand in ${NETLAB_PYTHON:-} "$(command -v python3 || true)" /usr/bin/python3; do
        [ -n "$cand" ] && [ -x "$cand" ] && py_new_enough "$cand" && { PY=$cand; break; }
    done
    if [ -z "$PY" ]; then
        echo "setup: python3 >= 3.11 is required (found $(python3 --version 2>&1))" >&2
        exit 1
    fi
    echo "setup: note: $PY is not reachable by other users; only root will be able to run netlab (even --help)" >&2
fi

# An existing virtualenv whose interpreter others cannot reach (made before this check) is
# rebuilt with the reachable one (`venv --upgrade` keeps the old interpreter links).
if [ -x "$VENV/bin/python" ] && ! py_ok "$VENV/bin/python" && py_ok "$PY"; then
    echo "setup: rebuilding virtualenv $VENV with $PY (other users could not run its interpreter)"
    rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PY" -c 'import ensurepip' 2>/dev/null; then
        echo "setup: installing python3-venv"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    fi
    echo "setup: creating virtualenv $VENV"
    "$PY" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip -q --disable-pip-version-check)
stamp="$VENV/.netlab-installed"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    echo "setup: installing netlab and its Python dependencies into $VENV"
    # wheel and a current setuptools first: python-iptables and etcd3 ship only setup.py,
    # and without them pip falls back to the deprecated `setup.py install`.
    "${pip[@]}" install --upgrade wheel 'setuptools>=68'
    "${pip[@]}" install --use-pep517 -e "$ROOT[test]"
    touch "$stamp"
fi

stale_helpers | while read -r src; do
    gcc -Os -static -Wall -o "$VENV/bin/netlab-$(basename "$src" .c)" "$src"
done
chmod -R go+rX "$VENV"
if ! others_reach "$ROOT/pyproject.toml"; then
    echo "setup: note: $ROOT is not readable by other users, so only root can run netlab (even --help); check the project out under a readable directory (e.g. /opt/netlab) for others to be told to use sudo" >&2
fi
[ "$venv_only" -eq 1 ] && exit 0

ln -sf "$VENV/bin/netlab" /usr/local/bin/netlab

if [ "$service" -eq 1 ]; then
    install -d -m 0755 /etc/netlab
    if [ ! -e "$LAB_FILE" ]; then
        echo "setup: writing the default lab to $LAB_FILE (edit it, then: systemctl restart netlab)"
        "$VENV/bin/netlab" default-lab > "$LAB_FILE"
    fi
    install -m 0644 "$UNIT_SRC" "$UNIT_DST"
    systemctl daemon-reload
    echo "setup: enabling netlab.service (netlab up -f $LAB_FILE at boot, netlab down at stop)"
    systemctl enable --now netlab.service
fi
