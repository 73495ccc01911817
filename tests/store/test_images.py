"""Images through the CLI: import, commit --upper, images, history, inspect, diff, tag, rmi."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from unionfs.store import Store

from .helpers import assert_one_line_error, busybox_rootfs, describe, ok, run_cli


@pytest.fixture
def store(tmp_path: Path) -> Path:
    s = tmp_path / "store"
    ok(s, "import", str(busybox_rootfs(tmp_path / "rootfs")), "--tag", "base",
       "-m", "busybox")
    return s


def make_upper(path: Path) -> Path:
    """An upper as a union leaves it: new files, a changed file, whiteouts, an opaque dir,
    copied-up parents, and a private xattr that must not reach the layer."""
    (path / "etc").mkdir(parents=True)
    (path / "etc" / "hostname").write_text("changed\n")
    os.setxattr(path / "etc" / "hostname", "trusted.overlay.unionfs.origin", b"x")
    os.mknod(path / "etc" / "passwd.link", 0o020000, os.makedev(0, 0))
    (path / "usr" / "share").mkdir(parents=True)
    os.setxattr(path / "usr" / "share", "trusted.overlay.opaque", b"y")
    (path / "usr" / "share" / "new").write_text("n")
    (path / "app").mkdir()
    (path / "app" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(path / "app" / "run.sh", 0o755)
    return path


def test_commit_upper_on_image_and_query_it(tmp_path: Path, store: Path) -> None:
    upper = make_upper(tmp_path / "upper")
    image_id = ok(store, "commit", "--upper", str(upper), "--parent", "base", "app:v1",
                  "-m", "add app", "--author", "me").strip()
    assert image_id.startswith("sha256:")
    table = ok(store, "images")
    assert table.splitlines()[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED",
                                             "SIZE", "LAYERS"]
    assert any(line.split()[:2] == ["app", "v1"] for line in table.splitlines())
    rows = json.loads(ok(store, "history", "app:v1", "--format", "json"))
    assert [r["comment"] for r in rows] == ["add app", "busybox"]
    assert rows[0]["author"] == "me" and "commit" in rows[0]["created_by"]
    assert rows[0]["size"] > 0
    hist = ok(store, "history", "app:v1")
    assert "add app" in hist and "busybox" in hist
    info = json.loads(ok(store, "inspect", "app:v1"))[0]
    assert info["Id"] == image_id and info["RepoTags"] == ["app:v1"]
    layer = Path(info["Layers"][0]["Dir"])
    assert os.listxattr(layer / "etc" / "hostname") == []
    assert os.getxattr(layer / "usr" / "share", "trusted.overlay.opaque") == b"y"
    layer_info = json.loads(ok(store, "inspect", info["Layers"][0]["Id"][7:19]))[0]
    assert layer_info["UsedBy"] == ["app:v1"]


def test_diff_of_image_and_upper(tmp_path: Path, store: Path) -> None:
    upper = make_upper(tmp_path / "upper")
    ok(store, "commit", "--upper", str(upper), "--parent", "base", "app")
    expected = [
        "A /app", "A /app/run.sh", "C /etc", "C /etc/hostname", "D /etc/passwd.link",
        "C /usr", "C /usr/share", "D /usr/share/doc", "A /usr/share/new",
    ]
    assert ok(store, "diff", "app").splitlines() == expected
    assert ok(store, "diff", "--upper", str(upper), "base").splitlines() == expected
    data = json.loads(ok(store, "diff", "app", "--format", "json"))
    assert data[0] == {"kind": "A", "path": "/app"}


def test_same_upper_committed_twice_shares_the_layer(tmp_path: Path, store: Path) -> None:
    upper = make_upper(tmp_path / "upper")
    ok(store, "commit", "--upper", str(upper), "--parent", "base", "one")
    ok(store, "commit", "--upper", str(upper), "--parent", "base", "two")
    s = Store.open(store)
    assert s.image("one").layer_ids == s.image("two").layer_ids
    assert len(s.layer_ids()) == 2
    tree = ok(store, "images", "--tree")
    assert tree.splitlines()[0].startswith("└── base:latest")
    assert "one:latest, two:latest" in tree or "two:latest, one:latest" in tree


def test_tag_and_rmi_rules(tmp_path: Path, store: Path) -> None:
    ok(store, "commit", "--upper", str(make_upper(tmp_path / "u")), "--parent", "base", "app")
    ok(store, "tag", "base", "alias:1")
    res = run_cli(store, "rmi", "base")
    assert "Untagged: base:latest" in res.stdout and res.returncode == 0
    assert_one_line_error(run_cli(store, "rmi", "alias:1"), "used by image app:latest")
    out = ok(store, "rmi", "app")
    assert "Deleted: sha256:" in out and "Deleted layer" in out
    out = ok(store, "rmi", "alias:1")
    assert "Deleted layer" in out
    s = Store.open(store)
    assert s.images() == [] and s.layer_ids() == []
    assert_one_line_error(run_cli(store, "rmi", "nothing"), "unknown image: nothing")


def test_bad_arguments_are_one_line_errors(tmp_path: Path, store: Path) -> None:
    assert_one_line_error(run_cli(store, "history", "nope"), "unknown image")
    assert_one_line_error(run_cli(store, "import", str(tmp_path / "missing"), "--tag", "x"),
                          "no such file")
    assert_one_line_error(run_cli(store, "import", str(tmp_path), "--tag", "Bad Name!"),
                          "invalid image name")
    assert_one_line_error(run_cli(store, "commit", "/nonexistent", "x"), "neither a mount")
    res = run_cli(store, "inspect", "zzzz")  # docker's message and exit status
    assert res.returncode == 1 and res.stderr == "unionfs: error: No such object: zzzz\n"
    res = run_cli(store, "save", "base")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    for cmd in ("import", "commit", "images", "history", "inspect", "diff", "rmi", "tag",
                "squash", "save", "load"):
        assert run_cli(store, cmd, "--help").returncode == 0


def test_api_for_mount_and_runtime(tmp_path: Path, store: Path) -> None:
    s = Store.open(store)
    image = s.image("base")
    assert s.image(image.id[7:15]).id == image.id
    assert [p.is_dir() for p in image.layer_dirs] == [True]
    up1, _ = s.new_upper("mount", "m")
    up2, work2 = s.new_upper("mount", "m")
    assert up1 != up2 and up1.is_dir() and work2.is_dir()
    assert os.stat(up1).st_dev == os.stat(store).st_dev
    (up1 / "f").write_text("x")
    new = s.commit(up1, "base", "n", "msg", "made by test", "me")
    assert new.layer_ids[:-1] == image.layer_ids
    assert describe(new.layer_dirs[0]) == describe(up1)
    os.environ["UNIONFS_STORE"] = str(store)
    try:
        assert Store.open().root == store
    finally:
        del os.environ["UNIONFS_STORE"]


def test_progress_bar_only_on_a_terminal(tmp_path: Path, store: Path) -> None:
    """Under a pseudo-terminal (``script``) import draws a bar on stderr; piped, it is quiet."""
    import shlex
    import subprocess
    import sys

    tarball = tmp_path / "r.tar"
    subprocess.run(["tar", "-C", str(tmp_path / "rootfs"), "-cf", str(tarball), "."],
                   check=True)
    argv = [sys.executable, "-m", "unionfs", "import", str(tarball), "--tag", "tty",
            "--store", str(store)]
    res = subprocess.run(["script", "-qec", shlex.join(argv), "/dev/null"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0
    assert "importing r.tar" in res.stdout and "\x1b[" in res.stdout
    piped = run_cli(store, "import", str(tarball), "--tag", "piped")
    assert piped.returncode == 0 and piped.stderr == ""
    assert piped.stdout.startswith("sha256:") and len(piped.stdout.splitlines()) == 1


def test_commit_diff_inspect_of_a_container(tmp_path: Path, store: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A name that is neither a mount nor an image is asked of ``runtime.state``."""
    from unionfs.cli import main
    from unionfs.runtime import state

    s = Store.open(store)
    base = s.image("base")
    upper = make_upper(tmp_path / "container-upper")
    info = {"Id": "c0ffee", "Name": "c1", "RootFs": str(tmp_path / "not-mounted"),
            "LowerDirs": [str(p) for p in base.layer_dirs], "ImageId": base.id}
    monkeypatch.setattr(state, "container_upper", lambda _s, n: upper if n == "c1" else None)
    monkeypatch.setattr(state, "container_info", lambda _s, n: info if n == "c1" else None)
    assert main(["commit", "c1", "fromc", "-m", "from a container", "--store", str(store)]) == 0
    committed = s.image("fromc")
    assert committed.layer_ids[:-1] == base.layer_ids
    assert describe(committed.layer_dirs[0])["app/run.sh"] == describe(upper)["app/run.sh"]
    capsys.readouterr()
    assert main(["diff", "c1", "--store", str(store)]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == ["A /app", "A /app/run.sh"]
    assert main(["inspect", "c1", "--store", str(store)]) == 0
    assert json.loads(capsys.readouterr().out) == [info]
    assert main(["commit", "nope", "x", "--store", str(store)]) == 2


def test_commit_upper_finds_its_image(tmp_path: Path, store: Path) -> None:
    """An upper made by ``new_upper(..., image=)`` commits onto that image by itself; a store
    upper without that record needs --parent."""
    s = Store.open(store)
    base = s.image("base")
    upper, _ = s.new_upper("mount", "m", image=base)
    (upper / "f").write_text("f")
    ok(store, "commit", "--upper", str(upper), "child")
    assert s.image("child").layer_ids[:-1] == base.layer_ids
    bare, _ = s.new_upper("mount", "bare")
    assert_one_line_error(run_cli(store, "commit", "--upper", str(bare), "x"), "--parent")
    ok(store, "commit", "--upper", str(bare), "--parent", "base", "x")
