"""store.Informer and Store.wait against a real etcd (no lab): the cache follows puts and
deletes without re-listing, and a wait wakes on a watch event rather than a poll."""

import os
import shutil
import subprocess
import threading
import time

import pytest

from netlab.store import Informer, Store

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("etcd"), reason="needs root and etcd"),
    # Store.close() ends etcd3's watch thread with SystemExit, which Python keeps quiet and
    # pytest's thread hook reports.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning"),
]


@pytest.fixture(scope="module")
def st(tmp_path_factory):
    d = tmp_path_factory.mktemp("etcd")
    # A unix socket only: no TCP port, no address of the host is involved.
    p = subprocess.Popen(["etcd", "--name", "t", "--data-dir", str(d / "data"),
                          "--listen-client-urls", "unix://etcd.sock:2379",
                          "--advertise-client-urls", "unix://etcd.sock:2379",
                          "--listen-peer-urls", "unix://peer.sock:2380"],
                         cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    s = Store(f"unix://{d}/etcd.sock:2379")
    try:
        assert s.wait_healthy(20), "etcd did not come up"
        yield s
    finally:
        s.close()
        p.terminate()
        p.wait(10)


def test_informer_follows_puts_and_deletes_from_its_list(st):
    st.put("/t/a", {"n": 1})
    changes = threading.Event()
    inf = Informer(st, "/t/", on_change=changes.set)
    inf.sync()
    assert [i.key for i in inf.items()] == ["/t/a"]
    st.put("/t/b", {"n": 2})
    st.put("/t/a", {"n": 3})
    st.delete("/t/b")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (inf.get("/t/a") and inf.get("/t/a").value == {"n": 3}
                                               and inf.get("/t/b") is None):
        changes.wait(0.1)
        changes.clear()
    assert inf.values() == [{"n": 3}]
    assert inf.revision >= st.get("/t/a").mod_revision
    inf.stop()


def test_wait_wakes_on_the_write_not_on_a_poll(st):
    st.delete("/w/flag")
    t = threading.Timer(0.3, lambda: st.put("/w/flag", True))
    t.start()
    t0 = time.monotonic()
    # recheck=30: only the watch event can end this wait in time.
    ok = st.wait("/w/", lambda: st.get("/w/flag") is not None, timeout=10, recheck=30)
    took = time.monotonic() - t0
    assert ok and took < 5, took
    assert not st.wait("/w/", lambda: False, timeout=0.2)
