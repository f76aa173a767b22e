"""nftables inside a namespace: apply `nft -f` text (one transaction), read state as JSON.

The only writer of nftables in netlab. Text comes from the pure netlab.plan.nft_rules; state
is read with `nft -j` (JSON), never by parsing nft's human listing.
"""

from __future__ import annotations

import json
import subprocess

from netlab.errors import KernelError
from netlab.kernel.common import run
from netlab.kernel.netns import ns_exec_prefix


def nft_apply(netns: str | None, text: str) -> None:
    """Run an `nft -f` file: all of its commands succeed together or none does."""
    run([*ns_exec_prefix(netns), "nft", "-f", "-"], input=text,
        what=f"nft -f{' in ' + netns if netns else ''}")


def nft_json(netns: str | None, *args: str) -> list[dict]:
    """`nft -j ARGS` as the list under "nftables" (metainfo dropped); [] if the object is
    missing (No such file or directory)."""
    cmd = [*ns_exec_prefix(netns), "nft", "-j", *args]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError:
        raise KernelError("nft: command not found (apt-get install nftables)") from None
    if p.returncode != 0:
        if "No such file or directory" in p.stderr:
            return []
        raise KernelError(f"nft -j {' '.join(args)} failed: {p.stderr.strip().splitlines()[0]}")
    return [o for o in json.loads(p.stdout).get("nftables", []) if "metainfo" not in o]


def table_exists(netns: str | None, family: str, table: str) -> bool:
    return any("table" in o and o["table"]["name"] == table and o["table"]["family"] == family
               for o in nft_json(netns, "list", "tables"))


def delete_table(netns: str | None, family: str, table: str) -> None:
    """Remove the table if it is there (add first, so a missing table is no error)."""
    nft_apply(netns, f"add table {family} {table}\ndelete table {family} {table}\n")
