"""Kernel-layer helpers that only read: mount points (bind mounts included)."""

from pathlib import Path

from netlab.kernel import netns


def test_is_mount_point_sees_mounts_and_not_plain_dirs(tmp_path):
    assert netns.is_mount_point(Path("/proc"))
    assert not netns.is_mount_point(tmp_path)
    assert not netns.is_mount_point(Path("/run/flannel-never-a-mount"))
