"""The `docker` command on PATH inside `netlab exec NODE`: parses docker's arguments for
`ps` and `inspect` and prints what netlab.lab.docker renders; any other verb gets one line
saying it is not available in the lab (exit 1), bad flags exit 2 as docker's CLI does.

Started by the shim `netlab up` writes into the lab's bin directory, as a script (so that
the netlab.cli package, Typer and all, is not imported for a `docker ps`):
`python -P .../netlab/cli/docker.py --lab LAB --node "$(hostname)" -- ARGS...`.
"""

from __future__ import annotations

import argparse
import json
import sys

from netlab.lab import docker


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (docker: "unknown flag: --x")
        sys.stderr.write(f"docker {self.prog.split()[-1]}: {message}\n")
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = argparse.ArgumentParser(prog="netlab-docker")
    top.add_argument("--lab", required=True)
    top.add_argument("--node", required=True)
    top.add_argument("args", nargs=argparse.REMAINDER)
    a = top.parse_args(argv)
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    verb = args[0] if args else ""
    if verb in ("ps", "container") and (verb == "ps" or args[1:2] in (["ls"], ["ps"], ["list"])):
        rest = args[1:] if verb == "ps" else args[2:]
        p = _Parser(prog="docker ps", add_help=True)
        p.add_argument("-a", "--all", action="store_true")
        p.add_argument("--no-trunc", action="store_true")
        p.add_argument("-q", "--quiet", action="store_true")
        p.add_argument("--format")
        o = p.parse_args(rest)
        try:
            sys.stdout.write(docker.ps(a.lab, a.node, all_=o.all, no_trunc=o.no_trunc, fmt=o.format,
                                       quiet=o.quiet))
        except ValueError as e:
            sys.stderr.write(f"docker ps: {e}\n")
            return 2
        return 0
    if verb == "inspect" or args[:2] == ["container", "inspect"]:
        rest = args[1:] if verb == "inspect" else args[2:]
        p = _Parser(prog="docker inspect")
        p.add_argument("-f", "--format")
        p.add_argument("refs", nargs="+")
        o = p.parse_args(rest)
        found, missing = docker.inspect(a.lab, a.node, o.refs)
        if o.format:
            for obj in found:
                sys.stdout.write(_go_format(o.format, obj) + "\n")
        else:
            sys.stdout.write(json.dumps(found, indent=4) + "\n")
        for m in missing:
            sys.stderr.write(f"Error: No such object: {m}\n")
        return 1 if missing else 0
    if verb in ("", "-h", "--help", "help"):
        sys.stdout.write("Usage: docker ps [-a] [--no-trunc] [-q] [--format FORMAT] | docker inspect NAME|ID...\n"
                         "(netlab's docker: this node's pod containers; no dockerd runs in the lab)\n")
        return 0
    sys.stderr.write(f"docker {verb}: not available in the lab (netlab has no dockerd; "
                     "`docker ps` and `docker inspect` show this node's containers)\n")
    return 1


def _go_format(fmt: str, obj: dict) -> str:
    """`{{.State.Pid}}`-style paths of docker inspect --format (the common case only)."""
    import re

    def value(m):
        cur = obj
        for part in m.group(1).split("."):
            cur = cur.get(part, "") if isinstance(cur, dict) else ""
        return json.dumps(cur) if isinstance(cur, (dict, list)) else str(cur).lower() \
            if isinstance(cur, bool) else str(cur)

    return re.sub(r"{{\s*\.([\w.]+)\s*}}", value, fmt)


if __name__ == "__main__":
    raise SystemExit(main())
