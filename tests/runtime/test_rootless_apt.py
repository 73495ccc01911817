"""The seeds' story, rootless: a Debian base (debootstrap) imported by the unprivileged user,
``apt-get install -y nginx-light`` in a rootless container, commit, run the site.

Slow (debootstrap and apt-get fetch from Debian's archive, the one registry reachable here):
about 3-4 minutes on a 2-core VM. ``UNIONFS_TEST_DEBIAN_TAR`` names a ready base tarball
(``tar --numeric-owner -C ROOT -cf``) to skip the debootstrap step.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .test_rootless import Rootless
from .test_rootless_idmap import fetch, free_port, nothing_left, ranged

_ = (ranged, nothing_left)  # fixtures, used by name
MIRROR = "http://deb.debian.org/debian"


def debian_tar(dest: Path) -> Path:
    ready = os.environ.get("UNIONFS_TEST_DEBIAN_TAR")
    if ready:
        shutil.copy(ready, dest)
    else:
        root = dest.parent / "debian-root"
        subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(root), MIRROR],
                       check=True, capture_output=True, timeout=900)
        subprocess.run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(dest), "."],
                       check=True)
        shutil.rmtree(root)
    os.chmod(dest, 0o644)
    return dest


@pytest.mark.slow
def test_rootless_apt_get_install_commit_and_run(ranged: Rootless) -> None:
    debian_tar(ranged.base / "debian.tar")
    port = free_port()
    script = (
        "$UF import debian.tar -t debian >/dev/null && "
        "$UF run --name apt debian sh -c 'apt-get update -qq && "
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null && "
        "stat -c %U:%G /etc/shadow; id -u www-data' && "
        "$UF commit apt nginx >/dev/null && $UF rm apt >/dev/null && "
        f"$UF run -d --name site -p 127.0.0.1:{port}:80 nginx nginx -g 'daemon off;' "
        ">/dev/null"
    )
    res = ranged(script, timeout=900)
    assert res.returncode == 0, res.stderr
    try:
        assert res.stdout.split() == ["root:shadow", "33"]  # group 42, and a new user
        assert "Welcome to nginx" in fetch(f"http://127.0.0.1:{port}/", timeout=30)
    finally:
        ranged("$UF stop -t 2 site >/dev/null; $UF rm site >/dev/null")
