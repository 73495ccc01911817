"""The op generator: a seed in, a list of filesystem calls (plain data) out.

Pure: no filesystem access, no clock. The same seed always gives the same list, so a mismatch
found with seed N is replayed by running seed N again. The generator keeps a rough guess of
which paths exist (every name it ever created, plus the starting tree) so that most calls hit
something; calls that fail are as useful as the ones that succeed, since the errno must agree.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

UTIME_NOW = "now"
UTIME_OMIT = "omit"
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
XATTR_CREATE = 1
XATTR_REPLACE = 2

NAMES = ("a", "b", "c", "n1", "n2", "sub")
# trusted.overlay.*: the overlay's own names, which a nested union stores escaped.
XATTR_NAMES = ("user.a", "user.b", "user.origin", "trusted.overlay.nested")
UIDS = (0, 1000, 1234)
# Fixed timestamps, all long before any test runs: a time after the run's start is "now".
FIXED_TIMES = (1_000_000_000_123_456_789, 1_300_000_000_000_000_000, 1_500_000_000_000_000_005)


@dataclass(frozen=True)
class Op:
    """One call: ``name`` applied to ``path`` (relative to the mount) with ``args``."""

    name: str
    path: str
    args: tuple[object, ...] = ()

    def __str__(self) -> str:
        args = ", ".join(_short(a) for a in self.args)
        return f"{self.name}({self.path!r}{', ' + args if args else ''})"


def _short(value: object) -> str:
    """repr, with long data cut (the seed regenerates it exactly)."""
    if isinstance(value, bytes) and len(value) > 16:
        return f"<{len(value)} bytes {value[:8]!r}...>"
    return repr(value)


# kind -> weight. Reads are cheap and catch stale views; changes are the point.
WEIGHTS: dict[str, int] = {
    "create": 8, "write": 8, "overwrite": 3, "read": 4, "truncate": 4, "unlink": 6,
    "mkdir": 6, "rmdir": 5,
    "rename": 12, "link": 4, "symlink": 4, "readlink": 1, "chmod": 4, "chown": 3,
    "utimens": 5, "setxattr": 5, "removexattr": 3, "getxattr": 2, "listxattr": 1,
    "mkfifo": 2, "stat": 3, "listdir": 4, "fallocate": 3,
    "mknod": 3, "direct_io": 3, "open_removed": 3, "deep": 1, "lseek": 4,
}
# mknod: (type, major, minor); char 0/0 is the whiteout format, refused with EPERM.
MKNOD_KINDS = (("fifo", 0, 0), ("char", 1, 3), ("char", 0, 0), ("block", 7, 0),
               ("block", 0, 0), ("socket", 0, 0))
DEEP_LEVELS = 22  # x 200-byte names: deeper than PATH_MAX below the mount
SEEK_DATA, SEEK_HOLE = 3, 4
SPARSE_FILE = "sparse"  # the starting layers' sparse file (layers.py)
# lseek offsets: block edges, inside blocks, around the sparse file's hole (1 MiB) and end.
SEEK_OFFSETS = (0, 1, 4096, 5000, 12288, (1 << 20) - 1, 1 << 20, (1 << 20) + 4096,
                (1 << 20) + 8400, 2 << 20)
# fallocate modes: allocate, keep size, punch a hole (needs keep size), zero a range.
FALLOCATE_MODES = (0, 0x01, 0x02 | 0x01, 0x10)


@dataclass
class Guess:
    """Paths the generator believes may exist (never pruned: stale guesses test errors)."""

    files: list[str]
    dirs: list[str]
    seen: set[str] = field(default_factory=set)

    def add(self, path: str, is_dir: bool) -> None:
        if path in self.seen:
            return
        self.seen.add(path)
        (self.dirs if is_dir else self.files).append(path)


def generate(seed: int, count: int, files: list[str], dirs: list[str]) -> list[Op]:
    """``count`` ops for ``seed``, starting from a tree with these files and dirs."""
    rng = random.Random(seed)
    guess = Guess(list(files), list(dirs), set(files) | set(dirs))
    kinds = list(WEIGHTS)
    weights = [WEIGHTS[k] for k in kinds]
    return [_make(rng.choices(kinds, weights)[0], rng, guess) for _ in range(count)]


def _any_path(rng: random.Random, g: Guess) -> str:
    """An existing-looking path most of the time, a fresh one sometimes."""
    roll = rng.random()
    if roll < 0.5 and g.files:
        return rng.choice(g.files)
    if roll < 0.8 and g.dirs:
        return rng.choice(g.dirs)
    return _new_path(rng, g)


def _new_path(rng: random.Random, g: Guess) -> str:
    parent = rng.choice(["", *g.dirs])
    name = rng.choice(NAMES)
    return f"{parent}/{name}" if parent else name


def _file(rng: random.Random, g: Guess) -> str:
    return rng.choice(g.files) if g.files and rng.random() < 0.85 else _any_path(rng, g)


def _dir(rng: random.Random, g: Guess) -> str:
    return rng.choice(g.dirs) if g.dirs and rng.random() < 0.85 else _any_path(rng, g)


def _data(rng: random.Random) -> bytes:
    size = rng.choice((0, 1, 7, 100, 5000))
    return bytes(rng.getrandbits(8) for _ in range(size))


def _time(rng: random.Random) -> object:
    return rng.choice((*FIXED_TIMES, UTIME_NOW, UTIME_OMIT))


def _make(kind: str, rng: random.Random, g: Guess) -> Op:
    return _MAKERS[kind](rng, g)


def _op_create(rng: random.Random, g: Guess) -> Op:
    path = _new_path(rng, g)
    g.add(path, False)
    return Op("create", path, (rng.choice((0o644, 0o600, 0o755, 0o4755)),))


def _op_write(rng: random.Random, g: Guess) -> Op:
    return Op("write", _file(rng, g), (rng.choice((0, 0, 3, 4096, 10000)), _data(rng),
                                       rng.random() < 0.2))


def _op_overwrite(rng: random.Random, g: Guess) -> Op:
    """open(O_TRUNC), then write."""
    return Op("overwrite", _file(rng, g), (_data(rng),))


def _op_fallocate(rng: random.Random, g: Guess) -> Op:
    offset, length = rng.choice(((0, 4096), (4096, 8192), (0, 20000), (100, 50)))
    return Op("fallocate", _file(rng, g), (rng.choice(FALLOCATE_MODES), offset, length))


def _op_truncate(rng: random.Random, g: Guess) -> Op:
    return Op("truncate", _file(rng, g), (rng.choice((0, 1, 5, 8192)),))


def _op_mkdir(rng: random.Random, g: Guess) -> Op:
    path = _new_path(rng, g)
    g.add(path, True)
    return Op("mkdir", path, (rng.choice((0o755, 0o700, 0o2775)),))


def _op_rename(rng: random.Random, g: Guess) -> Op:
    src = _dir(rng, g) if rng.random() < 0.5 else _file(rng, g)
    dst = _any_path(rng, g) if rng.random() < 0.4 else _new_path(rng, g)
    flags = rng.choice((0, 0, 0, RENAME_NOREPLACE, RENAME_EXCHANGE))
    g.add(dst, src in g.dirs)
    return Op("rename", src, (dst, flags))


def _op_link(rng: random.Random, g: Guess) -> Op:
    src = _file(rng, g)
    dst = _new_path(rng, g)
    g.add(dst, False)
    return Op("link", src, (dst,))


def _op_symlink(rng: random.Random, g: Guess) -> Op:
    path = _new_path(rng, g)
    g.add(path, False)
    # Relative, without "..": whatever follows it stays inside the mount.
    target = rng.choice((*NAMES, "f0", "d/a", "nowhere"))
    return Op("symlink", path, (target,))


def _op_chmod(rng: random.Random, g: Guess) -> Op:
    return Op("chmod", _any_path(rng, g), (rng.choice((0o600, 0o755, 0o4711, 0o2755, 0o1777)),))


def _op_chown(rng: random.Random, g: Guess) -> Op:
    gid = rng.choice((*UIDS, -1))
    return Op("chown", _any_path(rng, g), (rng.choice((*UIDS, -1)), gid))


def _op_utimens(rng: random.Random, g: Guess) -> Op:
    return Op("utimens", _any_path(rng, g), (_time(rng), _time(rng), rng.random() < 0.5))


def _op_setxattr(rng: random.Random, g: Guess) -> Op:
    flags = rng.choice((0, 0, XATTR_CREATE, XATTR_REPLACE))
    value = rng.choice((b"", b"v1", b"a longer value"))
    return Op("setxattr", _any_path(rng, g), (rng.choice(XATTR_NAMES), value, flags))


Maker = Callable[[random.Random, Guess], Op]
Pick = Callable[[random.Random, Guess], str]


def _op_xattr_name(kind: str) -> Maker:
    def make(rng: random.Random, g: Guess) -> Op:
        return Op(kind, _any_path(rng, g), (rng.choice(XATTR_NAMES),))

    return make


def _op_mkfifo(rng: random.Random, g: Guess) -> Op:
    path = _new_path(rng, g)
    g.add(path, False)
    return Op("mkfifo", path, (0o644,))


def _op_mknod(rng: random.Random, g: Guess) -> Op:
    path = _new_path(rng, g)
    g.add(path, False)
    return Op("mknod", path, (*rng.choice(MKNOD_KINDS), rng.choice((0o644, 0o600))))


def _op_direct_io(rng: random.Random, g: Guess) -> Op:
    """O_DIRECT write of aligned blocks (or none), then an O_DIRECT read of one block."""
    blocks = rng.choice((0, 1, 2))
    return Op("direct_io", _file(rng, g), (rng.choice((0, 4096)), blocks,
                                           rng.getrandbits(8)))


def _op_lseek(rng: random.Random, g: Guess) -> Op:
    """SEEK_DATA or SEEK_HOLE from a fresh read-only fd; sometimes with a write through
    another fd first, still open (its pages may not be written back yet)."""
    write = None
    if rng.random() < 0.4:
        write = (rng.choice((0, 4096, (1 << 20) - 100, (1 << 20) + 20000, 2 << 20)),
                 _data(rng) or b"w")
    path = SPARSE_FILE if rng.random() < 0.3 else _file(rng, g)
    return Op("lseek", path, (rng.choice((SEEK_DATA, SEEK_HOLE)), rng.choice(SEEK_OFFSETS),
                              write))


def _op_open_removed(rng: random.Random, g: Guess) -> Op:
    """A new directory or FIFO, opened, removed, then fstat, readdir, fchmod, fchown."""
    return Op("open_removed", _new_path(rng, g), (rng.choice(("dir", "fifo")),
                                                  rng.choice((0o700, 0o751)),
                                                  rng.choice(UIDS)))


def _op_deep(rng: random.Random, g: Guess) -> Op:
    """A chain of directories deeper than PATH_MAX: made, a file written and read at the
    bottom, renamed there, then all removed again (fd-relative, one component at a time)."""
    return Op("deep", _dir(rng, g), (rng.choice(NAMES), _data(rng)))


def _op_path_only(kind: str, pick: Pick) -> Maker:
    def make(rng: random.Random, g: Guess) -> Op:
        return Op(kind, pick(rng, g))

    return make


_MAKERS: dict[str, Maker] = {
    "create": _op_create, "write": _op_write, "overwrite": _op_overwrite,
    "truncate": _op_truncate, "fallocate": _op_fallocate, "mkdir": _op_mkdir,
    "rename": _op_rename, "link": _op_link, "symlink": _op_symlink, "chmod": _op_chmod,
    "chown": _op_chown, "utimens": _op_utimens, "setxattr": _op_setxattr,
    "removexattr": _op_xattr_name("removexattr"), "getxattr": _op_xattr_name("getxattr"),
    "mkfifo": _op_mkfifo, "mknod": _op_mknod, "direct_io": _op_direct_io,
    "open_removed": _op_open_removed, "deep": _op_deep, "lseek": _op_lseek,
    "read": _op_path_only("read", _file), "unlink": _op_path_only("unlink", _file),
    "rmdir": _op_path_only("rmdir", _dir), "readlink": _op_path_only("readlink", _file),
    "listxattr": _op_path_only("listxattr", _any_path), "stat": _op_path_only("stat", _any_path),
    "listdir": _op_path_only("listdir", _dir),
}
