import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (real namespaces, iptables, etcd)")
    for item in items:
        path = str(item.fspath)
        # tests/faults: the fuzz is pure, the rest kills daemons of a real lab.
        if "integration" in path or "e2e" in path or ("faults" in path and "fuzz" not in path):
            item.add_marker(skip)


def pytest_configure(config):
    # `netlab up` merges the lab's context into the user's kubeconfig: never the real one.
    import tempfile

    d = tempfile.mkdtemp(prefix="netlab-kube-")
    os.environ["KUBECONFIG"] = os.path.join(d, "config")
    os.environ["KUBECACHEDIR"] = os.path.join(d, "cache")
