"""The seeds' story from examples/: a Debian base (debootstrap), ops-nginx built on it with
apt-get, website-nginx on that, started with one ``run -d`` that publishes its port.

Slow (debootstrap and apt-get reach Debian's mirror; about 2.5 minutes for debootstrap, the
first time, and 1-2 minutes for the builds). The debootstrapped tree is kept in
/var/tmp/unionfs-test-cache for the next run.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.runtime.conftest import CLI

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CACHE = Path("/var/tmp/unionfs-test-cache/debian-bookworm-minbase")
MARKER = CACHE.with_name(CACHE.name + ".complete")  # beside the tree, not in the image
MIRROR = "http://deb.debian.org/debian"


def _mirror_reachable() -> bool:
    try:
        with urllib.request.urlopen(f"{MIRROR}/dists/bookworm/Release", timeout=15) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def debian_rootfs() -> Path:
    if MARKER.exists():
        return CACHE
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed (./dev setup installs it)")
    if not _mirror_reachable():
        pytest.skip(f"Debian's mirror {MIRROR} is not reachable from this machine")
    shutil.rmtree(CACHE, ignore_errors=True)
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(CACHE), MIRROR],
                   check=True, capture_output=True, timeout=1200)
    MARKER.write_text("ok\n")
    return CACHE


def _get(url: str, deadline: float) -> str:
    """The page at ``url`` once the server answers (until ``deadline``)."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return str(r.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # polling for the server to listen, not synchronisation


@pytest.mark.slow
def test_debian_nginx_story(cli: CLI, debian_rootfs: Path) -> None:
    cli.ok("import", str(debian_rootfs), "--tag", "debian:bookworm", timeout=600)
    try:
        out = cli.ok("build", "-t", "ops-nginx:1", str(EXAMPLES / "ops-nginx"), timeout=1200)
        assert "Successfully tagged ops-nginx:1" in out
        out = cli.ok("build", "-t", "website-nginx:1", str(EXAMPLES / "website-nginx"),
                     timeout=600)
        assert "Successfully tagged website-nginx:1" in out
        history = cli.ok("history", "--no-trunc", "website-nginx:1")
        assert "COPY --chown=ops:ops site/ /srv/www/" in history
        assert "apt-get install -y --no-install-recommends nginx" in history
        cli.ok("run", "-d", "--name", "web", "-p", "127.0.0.1:8080:80", "website-nginx:1")
        try:
            page = _get("http://127.0.0.1:8080/", time.monotonic() + 60)
            assert "Hello from website-nginx" in page
            ops_uid = cli.ok("exec", "web", "id", "-u", "ops").strip()
            workers = [line.split() for line in cli.ok("top", "web").splitlines()
                       if "worker process" in line]
            assert workers and all(w[0] == ops_uid for w in workers)
            cli.ok("stop", "web")  # SIGQUIT (the image's StopSignal): a graceful exit
            assert cli.ok("inspect", "-f", "{{.State.ExitCode}}", "web").strip() == "0"
        finally:
            cli("rm", "-f", "web")
    finally:
        for ref in ("website-nginx:1", "ops-nginx:1", "debian:bookworm"):
            cli("rmi", ref)
