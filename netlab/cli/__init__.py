"""The `netlab` command line (console script `netlab = "netlab.cli:main"`, `python -m netlab`).

app.py holds the Typer app and the lab verbs; one module per group of verbs adds its
commands and its `get`/`delete` kinds: nodes, pods, services, workloads. output.py prints.
The CLI only parses, calls netlab.lab / netlab.api, and prints.
"""

from netlab.cli import app, nodes, pods, services, trace, workloads
from netlab.cli.app import main

for _group in (nodes, pods, services, workloads, trace):
    _group.register(app.app)

__all__ = ["main"]
