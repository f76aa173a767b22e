import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (real namespaces, iptables, etcd)")
    for item in items:
        if "integration" in str(item.fspath) or "e2e" in str(item.fspath):
            item.add_marker(skip)


def pytest_configure(config):
    # `netlab up` merges the lab's context into the user's kubeconfig: never the real one.
    import tempfile

    d = tempfile.mkdtemp(prefix="netlab-kube-")
    os.environ["KUBECONFIG"] = os.path.join(d, "config")
    os.environ["KUBECACHEDIR"] = os.path.join(d, "cache")
