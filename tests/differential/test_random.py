"""Seeded random calls on the kernel's overlayfs and on unionfs: every result must agree.

For each seed, the same list of calls (see ``gen.py``) runs on a kernel overlay mount and on a
unionfs mount of identical copies of the starting layers (``layers.py``: files and dirs merged
across two lowers, whiteouts of files and dirs, an opaque dir, owners, modes, xattrs, a FIFO).
Checked, in order: each call's result or errno; the merged trees every few calls and at the
end; the trees after unmounting and mounting both again; and the tree the kernel shows when it
mounts unionfs's upper (with the same lowers and a fresh workdir).

Run many seeds: ``UNIONFS_DIFF_SEEDS=200 .venv/bin/python -m pytest tests/differential -q``;
replay one: ``UNIONFS_DIFF_SEED=17 ...``; longer runs: ``UNIONFS_DIFF_OPS=400``.

Renaming a directory that lower layers contribute to: unionfs (trusted mode) does what the
kernel does with ``redirect_dir=on``: the directory alone is copied up and gets an
``overlay.redirect`` xattr naming where its lower content is. So the kernel side is mounted
with ``redirect_dir=on``, and the kernel then also mounts unionfs's upper with it (reading
unionfs's redirects). In the rootless run (``userxattr``) the kernel forbids redirects and
refuses such a rename with EXDEV; unionfs copies the tree up and makes it opaque, and the
kernel side does what ``mv`` does, by hand through the kernel mount (copy with owners,
modes, xattrs and times, then remove; ``execute._move_by_hand``), and the results and trees
must agree. The one refinement over plain ``cp -a``: a file in the moved tree that is also
linked from outside it is linked, not copied, since a true rename keeps that link.

``truncate()`` to a file's current size: ext4 under the kernel's overlay stamps a new mtime;
FUSE with the writeback cache (which unionfs uses) keeps mtime, as POSIX allows, and the kernel
then ignores whatever mtime the server has. unionfs keeps the file's mtime so that its upper
agrees with what the mount showed. The kernel side puts the mtime back after such a truncate.

A rename between two names of one file (hard links) does nothing and succeeds, as rename(2)
says. The kernel's overlay without ``index=on`` holds such a file as two inodes when it was
linked through the mount, and may answer ESTALE (an exchange in ``userxattr`` mode); the
kernel side does nothing instead. For the same reason the links ``mv`` by hand must keep are
found by the inode in the kernel's upper directory, not by what the overlay shows.

``setxattr`` with XATTR_CREATE or XATTR_REPLACE that fails on the flag: pyfuse3 checks the
flag itself (with a getxattr) and never calls unionfs, while the kernel's overlay copies the
file up before it tries. The only trace of that copy-up is the nlink of a directory (1 once a
directory is merged with its copy). The kernel side checks the flag first, as pyfuse3 does.

Not compared, and why:

* ``st_ino`` and ``st_dev``: each implementation numbers inodes its own way (the kernel passes
  the layers' numbers through; unionfs makes its own, stable ones). Checked on unionfs
  instead: a listing's ``d_ino`` of every name is its ``st_ino`` (the kernel's listing of a
  merged directory may give another number than its stat, so that is not compared), and
  every number stays the same across the remount (but a copied-up symlink's in
  ``userxattr`` mode: user xattrs are refused on symlinks, so it has no origin xattr).
* ``st_atime``: reads update it at different moments (and relatime rules differ per mount).
* ``st_ctime``: set by the clock on every change, and copy-up changes it on both sides at
  different instants; it cannot be set by a caller, so no fixed value can be compared.
* ``st_mtime`` when set by the clock: the two mounts run each call one after the other, so
  "now" differs. Both sides must agree on whether a time is recent (set by the clock during
  the run) or a fixed one from the layers or a ``utimens`` call, which must agree exactly.
  Across a remount, and between unionfs and the kernel reading unionfs's upper, the times are
  those of the same files, so there they are compared exactly.
* names that readdir lists but lookup does not find: the kernel lists the whiteouts of a
  directory only one layer has (it reads it as it is); unionfs lists no whiteout. Snapshots
  skip such names (``snapshot.take``); the calls on them still compare their results.
* ``st_size`` and ``st_blocks`` of directories and ``st_blocks`` of files: how the layer's
  filesystem allocates, and which hidden entries (whiteouts) a directory holds, not content.
"""

from __future__ import annotations

import pytest

from tests.conftest import Mounts
from tests.differential.conftest import Twins, ops_per_seed, seeds
from tests.differential.gen import generate
from tests.differential.harness import run_differential

KERNEL_OPTS = "redirect_dir=on"


@pytest.mark.parametrize("seed", seeds())
def test_random_calls(seed: int, twins: Twins, mounts: Mounts) -> None:
    count = ops_per_seed()
    label = (f"seed {seed} (replay: UNIONFS_DIFF_SEED={seed} UNIONFS_DIFF_OPS={count} "
             ".venv/bin/python -m pytest tests/differential/test_random.py -q)")
    history = run_differential(label, lambda files, dirs: generate(seed, count, files, dirs),
                               twins, mounts, kernel_opts=KERNEL_OPTS)
    assert len(history) == count
