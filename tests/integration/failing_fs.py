"""A tiny read-only FUSE filesystem whose one entry ``d/bad`` fails every lookup with EIO.

Used as a lower layer to show that a layer's I/O error reaches the union's caller.
``python failing_fs.py MOUNTPOINT READY_FD``: writes a line to READY_FD once mounted, serves
until unmounted.
"""

from __future__ import annotations

import errno
import os
import stat
import sys

import pyfuse3
import trio

ROOT, DIR, GOOD, BAD = pyfuse3.ROOT_INODE, 2, 3, 4
NAMES = {ROOT: {b"d": DIR}, DIR: {b"good": GOOD, b"bad": BAD}}


class FailingFS(pyfuse3.Operations):
    def _attrs(self, inode: int) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = inode
        a.st_mode = (stat.S_IFDIR | 0o755) if inode in NAMES else (stat.S_IFREG | 0o644)
        a.st_nlink = 2 if inode in NAMES else 1
        a.st_size = 0
        a.entry_timeout = a.attr_timeout = 0  # every lstat reaches us
        return a

    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        inode = NAMES.get(parent_inode, {}).get(name)
        if inode == BAD:
            raise pyfuse3.FUSEError(errno.EIO)
        if inode is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attrs(inode)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if inode == BAD:
            raise pyfuse3.FUSEError(errno.EIO)
        return self._attrs(inode)

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        entries = sorted(NAMES.get(fh, {}).items())
        for index, (name, inode) in enumerate(entries[start_id:], start_id):
            if not pyfuse3.readdir_reply(token, name, self._attrs(inode), index + 1):
                return


def main() -> None:
    mountpoint, ready_fd = sys.argv[1], int(sys.argv[2])
    pyfuse3.init(FailingFS(), mountpoint, {"fsname=failingfs", "ro"})
    os.write(ready_fd, b"ready\n")
    os.close(ready_fd)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=False)


if __name__ == "__main__":
    main()
