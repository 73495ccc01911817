"""cp, export, ps, pause and prune for a rootless user with a subordinate range: the
container's owners are kept (in the container, in tar streams, in exports)."""

from __future__ import annotations

import io
import os
import tarfile

from .test_rootless import Rootless
from .test_rootless_idmap import nothing_left, ok, ranged

__all__ = ["nothing_left", "ranged"]  # the fixtures, shared with test_rootless_idmap


def _owners(data: bytes) -> dict[str, tuple[int, int]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: (m.uid, m.gid) for m in tar.getmembers()}


def test_rootless_cp_export_ps_pause_prune(ranged: Rootless) -> None:
    given = ranged.base / "given.tar"
    with tarfile.open(given, "w") as tar:
        info = tarfile.TarInfo("given")
        info.size, info.uid, info.gid = 3, 1000, 1000
        tar.addfile(info, io.BytesIO(b"hi\n"))
    os.chmod(given, 0o644)
    out = ranged.base / "out"
    try:
        ok(ranged, "$UF run -d --name rcp --network none owners sleep 1000 >/dev/null")
        # running: a tar on stdin, with and without -a; owners as the container sees them
        lines = ok(ranged, "$UF cp - rcp:/root < given.tar && "
                           "$UF exec rcp stat -c %u:%g /root/given && "
                           "$UF cp -a - rcp:/home < given.tar && "
                           "$UF exec rcp stat -c %u:%g /home/given")
        assert lines == ["0:0", "1000:1000"]
        ok(ranged, "$UF cp rcp:/nobody/f out/nob && $UF cp rcp:/home/user - > out/home.tar")
        assert (out / "nob").read_text() == "nobody's\n"
        assert os.stat(out / "nob").st_uid == ranged.uid  # the caller's, as docker's cp
        assert _owners((out / "home.tar").read_bytes())["user/f"] == (1000, 1000)
        res = ranged("$UF pause rcp")
        assert res.returncode == 1 and res.stderr.count("\n") == 1
        assert "cannot pause" in res.stderr or "freezer" in res.stderr
        # stopped: the union is mounted for the copy in the user's namespace
        ok(ranged, "$UF stop -t 0 rcp >/dev/null && $UF cp out/nob rcp:/home/user/copied && "
                   "$UF cp rcp:/home/user - > out/home2.tar && $UF export -o out/e.tar rcp")
        owners = _owners((out / "home2.tar").read_bytes())
        assert owners["user/f"] == (1000, 1000) and owners["user/copied"] == (0, 0)
        exported = _owners((out / "e.tar").read_bytes())
        assert exported["home/user/f"] == (1000, 1000)
        assert exported["home/user/copied"] == (0, 0) and exported["root/given"] == (0, 0)
        assert exported["nobody/f"] == (65534, 65534)
        assert "etc/hostname" not in exported
        assert ok(ranged, "$UF ps -a --format '{{.Names}} {{.State}}'") == ["rcp exited"]
        lines = ok(ranged, "$UF container prune -f")
        assert lines[0] == "Deleted Containers:" and lines[-1].startswith("Total reclaimed")
        assert ok(ranged, "$UF ps -aq") == []
    finally:
        ranged("$UF rm -f rcp")
