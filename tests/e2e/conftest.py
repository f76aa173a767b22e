"""Fixtures of the end-to-end suite: the default lab exactly as `sudo netlab up` brings it up.

The lab is the embedded default lab file (netlab/data/default-lab.yaml), workloads included,
with only its name changed to a unique test name (`t` + 7 hex digits), so a reader's lab
`seed` and other people's test labs are never touched. It is brought down with --purge at the
end of the module, even on failure, and must leave nothing behind.
"""

from __future__ import annotations

import pytest

from tests.labkit import Lab, lab_doc, leftovers, new_lab_name


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("e2e"), lab_doc(new_lab_name(), workloads=True))
    try:
        lab.up()
        yield lab
    finally:
        lab.down("--purge", check=False)
        left = leftovers(lab.name)
        assert not any(left.values()), f"netlab down of {lab.name} left {left}"
