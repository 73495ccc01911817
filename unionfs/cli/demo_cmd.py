"""``unionfs demo``: the whole product on an embedded default, each step printed as it runs.

Builds a busybox root filesystem, imports it as an image, mounts it, copies up, whites out and
renames a lower directory, shows the upper in the kernel overlayfs format, commits, runs a
container from the image, commits the container, and prints the history.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from unionfs.errors import OperationFailed


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="run the end-to-end demo in a scratch directory",
                       description=__doc__)
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.set_defaults(func=demo_command)


class Transcript:
    """Runs commands in the scratch dir and prints them with their output."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.env = dict(os.environ, UNIONFS_STORE=str(base / "store"))

    def say(self, text: str) -> None:
        print(f"\n## {text}", flush=True)

    def sh(self, command: str, *, check: bool = True) -> str:
        print(f"$ {command}", flush=True)
        res = subprocess.run(["sh", "-c", command], cwd=self.base, env=self.env,
                             capture_output=True, text=True)
        out = (res.stdout + res.stderr).rstrip()
        if out:
            print("  " + out.replace("\n", "\n  "), flush=True)
        if check and res.returncode != 0:
            raise OperationFailed(f"demo step failed (exit {res.returncode}): {command}")
        return res.stdout


def _unionfs() -> str:
    return f"{shlex.quote(sys.executable)} -m unionfs"


def build_rootfs(root: Path) -> None:
    """A tiny root filesystem: busybox-static and its applet links."""
    busybox = shutil.which("busybox")
    if busybox is None:
        raise OperationFailed("busybox not found (Debian: apt-get install busybox-static)")
    for d in ("bin", "etc", "tmp", "proc", "dev", "sys", "root", "srv/www"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, root / "bin/busybox")
    for applet in ("sh", "ls", "cat", "echo", "mkdir", "rm", "hostname", "ps", "id", "uname"):
        (root / "bin" / applet).symlink_to("busybox")
    (root / "etc/motd").write_text("welcome to the base image\n")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "srv/www/index.html").write_text("<h1>base</h1>\n")
    (root / "srv/www/old.html").write_text("old page\n")


def demo_command(args: argparse.Namespace) -> int:
    base = Path(tempfile.mkdtemp(prefix="unionfs-demo-"))
    t = Transcript(base)
    u = _unionfs()
    try:
        t.say(f"A busybox root filesystem in {base}/rootfs, imported as image base:1")
        build_rootfs(base / "rootfs")
        t.sh(f"{u} import rootfs --tag base:1")
        t.say("Mount the image with a fresh upper, then change it")
        t.sh("mkdir mnt")
        t.sh(f"{u} mount base:1 mnt")
        t.sh("echo 'changed in the union' >> mnt/etc/motd   # copy-up on write")
        t.sh("rm mnt/srv/www/old.html                       # a whiteout hides the lower file")
        t.sh("mv mnt/srv/www mnt/srv/site                   # rename a lower directory")
        t.sh("cat mnt/etc/motd; ls mnt/srv/site")
        t.say("The image layer is untouched; the upper is in the kernel overlayfs format")
        t.sh(f"{u} diff mnt")
        t.sh("ls -l store/uppers/mount/mnt/upper/srv   # www: char 0,0 = whiteout",
             check=False)
        t.sh("getfattr -m overlay -d store/uppers/mount/mnt/upper/srv/site 2>/dev/null",
             check=False)
        t.say("Commit the live mount as image web:2 (the mount goes on over a fresh upper)")
        t.sh(f"{u} commit mnt web:2 -m 'edit motd, drop old page, rename www'")
        t.sh(f"{u} umount mnt")
        t.say("Run a container from web:2: its own pid, hostname and root, on a union")
        t.sh(f"{u} run --name demo -h demo-box web:2 sh -c "
             "'echo pid $$ on $(hostname); cat /etc/motd; echo v3 > /srv/site/index.html'")
        t.sh(f"{u} commit demo web:3 -m 'new index page'")
        t.sh(f"{u} rm demo")
        t.say("The chain of images")
        t.sh(f"{u} history web:3")
        t.sh(f"{u} images --tree")
        t.sh(f"{u} run --rm web:3 cat /srv/site/index.html")
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(base / "mnt")], capture_output=True)
        if args.keep:
            print(f"\n(kept {base})")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print("\ndemo finished")
    return 0
