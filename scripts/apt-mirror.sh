#!/bin/sh
# apt-mirror.sh [URL]: point apt at a Debian mirror (used by the Containerfile's APT_MIRROR
# build argument). Without an argument it changes nothing.
set -eu
[ -n "${1:-}" ] || exit 0
for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    [ -f "$f" ] && sed -i "s#http://deb.debian.org/debian#$1#g" "$f"
done
exit 0
