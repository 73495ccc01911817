"""The build row: one Containerfile (COPY and RUN steps on a busybox base) built by
``unionfs build`` and by ``buildah bud --layers``, from a cold and then a warm cache.

The unionfs target runs ``unionfs build``; the kernel-overlayfs, fuse-overlayfs and native
targets run buildah with its overlay, overlay + fuse-overlayfs and vfs storage drivers (the
same comparison: each union's tool building the same recipe). Everything is prepared untimed
in the cell's private directory: the busybox base in a unionfs store and, saved from it as an
OCI archive, in buildah's store; the context; nothing reaches a registry. buildah runs its
RUN steps with ``--isolation chroot`` (crun cannot start containers under hybrid cgroups).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

from unionfs.benchmarks.commands import Command, Context, NotAvailable

CONTAINERFILE = """\
ARG BASE
FROM $BASE
COPY app/ /app/
RUN mkdir -p /data && for i in $(seq 1 200); do echo $i > /data/f$i; done
COPY big.bin /opt/big.bin
RUN sha256sum /opt/big.bin > /opt/big.sum
ENV MODE=bench
WORKDIR /app
RUN ls -R /app > /app/listing.txt
CMD ["cat", "/app/listing.txt"]
"""
BUILDAH_DRIVERS = {"overlayfs": ["--storage-driver", "overlay"],
                   "fuse-overlayfs": ["--storage-driver", "overlay", "--storage-opt",
                                      "overlay.mount_program=/usr/bin/fuse-overlayfs"],
                   "native": ["--storage-driver", "vfs"]}


def _unionfs(*args: str) -> list[str]:
    return [sys.executable, "-m", "unionfs", *args]


def _busybox_rootfs(root: Path) -> None:
    (root / "bin").mkdir(parents=True)
    for d in ("etc", "tmp", "proc", "sys", "dev", "root"):
        (root / d).mkdir()
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")


def _context(root: Path) -> None:
    (root / "app").mkdir(parents=True)
    for i in range(100):
        (root / "app" / f"module{i}.txt").write_text(f"module {i}\n" * 20)
    (root / "big.bin").write_bytes(os.urandom(8 << 20))
    (root / "Containerfile").write_text(CONTAINERFILE)


def _buildah(ctx: Context, *args: str) -> list[str]:
    base = ["buildah", "--root", str(ctx.scratch / "buildah-root"),
            "--runroot", str(ctx.scratch / "buildah-run"), *BUILDAH_DRIVERS[ctx.target]]
    return [*base, *args]


def prepare(ctx: Context) -> None:
    """Untimed: the base image in each tool's store, and the build context."""
    store = ctx.scratch / "store"
    _busybox_rootfs(ctx.scratch / "rootfs")
    _context(ctx.scratch / "ctx")
    subprocess.run(_unionfs("import", "--store", str(store), "--tag", "bench-busybox",
                            str(ctx.scratch / "rootfs")), check=True, capture_output=True)
    if ctx.target in BUILDAH_DRIVERS and shutil.which("buildah"):
        archive = ctx.scratch / "busybox.tar"
        subprocess.run(_unionfs("save", "--store", str(store), "-o", str(archive),
                                "bench-busybox"), check=True, capture_output=True)
        subprocess.run(_buildah(ctx, "pull", "--quiet", f"oci-archive:{archive}"), check=True,
                       capture_output=True)
        subprocess.run(_buildah(ctx, "tag", _buildah_image(ctx), "localhost/bench-busybox"),
                       check=True, capture_output=True)


def _buildah_image(ctx: Context) -> str:
    out = subprocess.run(_buildah(ctx, "images", "--quiet", "--no-trunc"), check=True,
                         capture_output=True, text=True).stdout.split()
    return out[0]


@functools.cache
def buildah_unavailable() -> str | None:
    return None if shutil.which("buildah") else "n/a: buildah is not installed"


def command(ctx: Context) -> Command:
    """``unionfs build`` on the unionfs target, ``buildah bud --layers`` on the others."""
    context = str(ctx.scratch / "ctx")
    if ctx.target == "unionfs":
        store = str(ctx.scratch / "store")
        return Command(_unionfs("build", "--store", store, "-t", "bench:built",
                                "--build-arg", "BASE=bench-busybox", context), ctx.scratch)
    if ctx.target not in BUILDAH_DRIVERS:
        raise NotAvailable("n/a: buildah has no storage driver for this union")
    reason = buildah_unavailable()
    if reason:
        raise NotAvailable(reason)
    # chroot isolation: buildah's default (crun) refuses this machine's hybrid cgroup setup.
    return Command(_buildah(ctx, "bud", "--layers", "--pull=never", "--network", "host",
                            "--isolation", "chroot",
                            "--build-arg", "BASE=localhost/bench-busybox", "-t", "bench:built",
                            context), ctx.scratch)


def verify(ctx: Context) -> str | None:
    """The image exists and has the four layers' worth of steps (untimed)."""
    if ctx.target == "unionfs":
        res = subprocess.run(_unionfs("history", "--store", str(ctx.scratch / "store"),
                                      "bench:built"), capture_output=True, text=True)
    elif ctx.target in BUILDAH_DRIVERS:
        res = subprocess.run(_buildah(ctx, "inspect", "bench:built"), capture_output=True,
                             text=True)
    else:
        return None
    if res.returncode != 0 or "ls -R /app" not in res.stdout:
        return f"no built image: {res.stderr.strip()[:200]}"
    return None
