"""Kernel-layer helpers that only read: mount points (bind mounts included)."""

from pathlib import Path

from netlab import kernel


def test_is_mount_point_sees_mounts_and_not_plain_dirs(tmp_path):
    assert kernel.is_mount_point(Path("/proc"))
    assert not kernel.is_mount_point(tmp_path)
    assert not kernel.is_mount_point(Path("/run/flannel-never-a-mount"))
