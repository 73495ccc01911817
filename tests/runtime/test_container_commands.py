"""ps (order, times, -n/-l, filters, formats), top, pause/unpause, cp, export and prune, as a
docker user expects them: real containers, real namespaces and cgroups."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from unionfs.runtime import cgroups, state
from unionfs.store import Store

from .conftest import CLI, build_busybox_rootfs
from .test_lifecycle import running, wait_for


def names(cli: CLI, *args: str) -> list[str]:
    return cli.ok("ps", "--format", "{{.Names}}", *args).split()


def rm(cli: CLI, *containers: str) -> None:
    cli("rm", "-f", *containers)


# -- ps ---------------------------------------------------------------------------------


def test_ps_newest_first_with_docker_times_last_and_latest(cli: CLI, store: Store) -> None:
    try:
        cli.ok("run", "--name", "ps-old", "busybox", "true")
        cli.ok("run", "-d", "--name", "ps-new", "busybox", "sleep", "1000")
        assert cli("run", "--name", "ps-newest", "busybox", "sh", "-c", "exit 4"
                   ).returncode == 4
        table = cli.ok("ps", "-a").splitlines()
        assert table[0].split() == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED",
                                    "STATUS", "PORTS", "NAMES"]
        assert table[0].startswith("CONTAINER ID   IMAGE     COMMAND")  # docker's spacing
        ours = [line for line in table[1:] if line.split()[-1].startswith("ps-")]
        assert [line.split()[-1] for line in ours] == ["ps-newest", "ps-new", "ps-old"]
        assert " ago " in ours[0] and "Exited (4) " in ours[0]
        assert "Up " in ours[1] and ("second" in ours[1] or "About a minute" in ours[1])
        assert "Exited (0)" in ours[2]
        assert "ps-new" in names(cli) and "ps-old" not in names(cli)  # running only
        assert names(cli, "-n", "2")[:2] == ["ps-newest", "ps-new"]
        assert len(names(cli, "-n", "2")) == 2
        assert names(cli, "-l") == ["ps-newest"]  # any state, as docker's -l
        ids = cli.ok("ps", "-a", "-q").split()
        assert state.get(store, "ps-newest").id[:12] == ids[0]
        assert cli.ok("ps", "-l", "--no-trunc", "-q").strip() == state.get(
            store, "ps-newest").id
    finally:
        rm(cli, "ps-old", "ps-new", "ps-newest")


def test_ps_filters_combine_as_docker_does(cli: CLI, store: Store) -> None:
    try:
        cli.ok("run", "--name", "flt-zero", "busybox", "true")
        assert cli("run", "--name", "flt-three", "busybox", "sh", "-c", "exit 3"
                   ).returncode == 3
        cli.ok("run", "-d", "--name", "flt-up", "busybox", "sleep", "1000")
        cli.ok("commit", "flt-zero", "flt-img", "--change", "LABEL tier=web")
        cli.ok("run", "-d", "--name", "flt-child", "flt-img", "sleep", "1000")
        def f(*filters: str) -> set[str]:
            args = [a for flt in filters for a in ("--filter", flt)]
            return {n for n in names(cli, "-a", *args) if n.startswith("flt-")}

        assert f("status=exited") == {"flt-zero", "flt-three"}
        assert f("status=exited", "status=running") == {"flt-zero", "flt-three", "flt-up",
                                                        "flt-child"}  # one key: any value
        assert f("status=running", "name=up") == {"flt-up"}  # two keys: both
        assert f("exited=3") == {"flt-three"}
        assert {n for n in names(cli, "--filter", "status=exited")
                if n.startswith("flt-")} == {"flt-zero", "flt-three"}  # no -a needed
        prefix = state.get(store, "flt-zero").id[:6]
        assert f(f"id={prefix}") == {"flt-zero"}
        assert f("name=^flt-t") == {"flt-three"}
        assert f("ancestor=busybox") == {"flt-zero", "flt-three", "flt-up", "flt-child"}
        assert f("ancestor=flt-img") == {"flt-child"}
        assert f("label=tier") == {"flt-child"} == f("label=tier=web")
        assert f("label=tier=db") == set() == f("label=tier", "label=other")
        assert f("since=flt-three") == {"flt-up", "flt-child"}
        assert f("before=flt-three") == {"flt-zero"}
        for bad, message in (("status=sleepy", "invalid filter 'status=sleepy'"),
                             ("colour=red", "invalid filter 'colour'"),
                             ("status", "bad format of filter")):
            res = cli("ps", "--filter", bad)
            assert res.returncode != 0 and message in res.stderr
            assert res.stderr.count("\n") == 1 and res.stdout == ""
    finally:
        rm(cli, "flt-zero", "flt-three", "flt-up", "flt-child")
        cli("rmi", "flt-img")


def test_ps_format_templates_tables_and_json(cli: CLI) -> None:
    cli.ok("commit", "--change", "LABEL team=blue", *_commit_source(cli, "fmt-src"),
           "fmt-img")
    cli.ok("run", "-d", "--name", "fmt-up", "fmt-img", "sleep", "1000")
    try:
        lines = cli.ok("ps", "--filter", "name=fmt-up", "--format",
                       "{{.Names}}|{{.State}}|{{.Image}}|{{.Label \"team\"}}").splitlines()
        assert lines == ["fmt-up|running|fmt-img|blue"]
        table = cli.ok("ps", "--filter", "name=fmt-up", "--format",
                       "table {{.Names}}\\t{{.Status}}").splitlines()
        assert table[0] == "NAMES     STATUS" and table[1].startswith("fmt-up    Up ")
        row = json.loads(cli.ok("ps", "--filter", "name=fmt-up", "--format", "json"))
        assert row["Names"] == "fmt-up" and row["State"] == "running"
        assert row["Labels"] == "team=blue" and row["Command"] == '"sleep 1000"'
        assert row["CreatedAt"].endswith("+0000 UTC") and row["RunningFor"].endswith(" ago")
        assert set(row) >= {"ID", "Image", "Ports", "Status", "Mounts", "Networks"}
        assert cli.ok("ps", "--filter", "name=fmt-up", "--format", "{{json .Names}}"
                      ) == '"fmt-up"\n'
        bad = cli("ps", "--format", "{{range .}}")
        assert bad.returncode != 0 and bad.stderr.count("\n") == 1
        assert cli.ok("inspect", "-f", "{{.State.Status}}", "fmt-up") == "running\n"
    finally:
        rm(cli, "fmt-up", "fmt-src")
        cli("rmi", "fmt-img")


def _commit_source(cli: CLI, name: str) -> list[str]:
    cli.ok("run", "--name", name, "busybox", "true")
    return [name]


# -- top --------------------------------------------------------------------------------


def test_top_shows_docker_columns_host_pids_and_takes_ps_options(cli: CLI,
                                                                 store: Store) -> None:
    cli.ok("run", "-d", "--name", "topc", "busybox", "sh", "-c", "sleep 1000 & wait")
    try:
        c = running(store, "topc")
        assert c is not None
        pid1 = c.state()["pid"]
        wait_for(lambda: len(cli.ok("top", "topc").splitlines()) == 3, what="two processes")
        lines = cli.ok("top", "topc").splitlines()
        assert lines[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
        rows = [line.split() for line in lines[1:]]
        assert str(pid1) in [r[1] for r in rows]  # host pids, as docker shows them
        assert any(r[-2:] == ["sleep", "1000"] for r in rows)
        assert lines[0].index("PID") == 20  # docker's columns: 20 wide at least
        custom = cli.ok("top", "topc", "-o", "pid,comm").splitlines()
        assert custom[0].split() == ["PID", "COMMAND"]
        assert sorted(r.split()[1] for r in custom[1:]) == ["sh", "sleep"]
        aux = cli.ok("top", "topc", "aux").splitlines()
        assert aux[0].split()[:3] == ["USER", "PID", "%CPU"] and len(aux) == 3
        res = cli("top", "topc", "-o", "comm")
        assert res.returncode == 1 and "Couldn't find PID field" in res.stderr
        cli.ok("stop", "-t", "1", "topc")
        res = cli("top", "topc")
        assert res.returncode != 0 and "not running" in res.stderr
    finally:
        rm(cli, "topc")


# -- pause / unpause ------------------------------------------------------------------------


def _counter(tmp_path: Path) -> Path:
    return tmp_path / "count"


def test_pause_freezes_and_unpause_thaws(cli: CLI, store: Store, tmp_path: Path) -> None:
    cli.ok("run", "-d", "--name", "frz", "-v", f"{tmp_path}:/out", "busybox", "sh", "-c",
           "trap 'exit 143' TERM; while :; do echo x >> /out/count; sleep 0.05; done")
    try:
        count = _counter(tmp_path)
        wait_for(lambda: count.exists() and count.stat().st_size > 0, what="the loop")
        cli.ok("pause", "frz")
        st = state.get(store, "frz").state()
        cg = cgroups.load(st["cgroup"])
        assert cg.frozen()
        assert names(cli, "--filter", "status=paused") == ["frz"]
        assert "(Paused)" in next(r for r in cli.ok("ps").splitlines() if "frz" in r)
        info = json.loads(cli.ok("inspect", "frz"))
        info = info[0] if isinstance(info, list) else info
        assert info["State"]["Status"] == "paused" and info["State"]["Paused"] is True
        size = count.stat().st_size
        time.sleep(0.5)  # a window in which a running loop writes ~10 lines: none come
        assert count.stat().st_size == size
        res = cli("pause", "frz")
        assert res.returncode == 1 and "already paused" in res.stderr
        res = cli("start", "frz")
        assert res.returncode != 0 and "try unpause instead" in res.stderr
        res = cli("exec", "frz", "true", timeout=20)  # would hang in the frozen cgroup
        assert res.returncode == 1 and "is paused, unpause the container" in res.stderr
        cli.ok("unpause", "frz")
        assert not cg.frozen()
        wait_for(lambda: count.stat().st_size > size, what="the loop to go on")
        res = cli("unpause", "frz")
        assert res.returncode == 1 and "is not paused" in res.stderr
        # stop of a paused container: the signal arrives once it is thawed (its trap runs)
        cli.ok("pause", "frz")
        start = time.monotonic()
        cli.ok("stop", "-t", "20", "frz")
        assert time.monotonic() - start < 10
        assert state.get(store, "frz").state()["exit_code"] == 143
        res = cli("pause", "frz")
        assert res.returncode == 1 and "is not running" in res.stderr
    finally:
        rm(cli, "frz")


def test_kill_and_rm_of_a_paused_container(cli: CLI, store: Store) -> None:
    try:
        cli.ok("run", "-d", "--name", "frz-kill", "busybox", "sleep", "1000")
        cli.ok("run", "-d", "--name", "frz-rm", "busybox", "sleep", "1000")
        cli.ok("pause", "frz-kill", "frz-rm")
        cli.ok("kill", "frz-kill")
        assert cli.ok("wait", "frz-kill", timeout=30) == "137\n"
        cli.ok("rm", "-f", "frz-rm")
        assert state.find(store, "frz-rm") is None
    finally:
        rm(cli, "frz-kill", "frz-rm")


# -- cp -------------------------------------------------------------------------------------


@pytest.fixture
def host_tree(tmp_path: Path) -> Path:
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "f").write_text("hello\n")
    (d / "sub" / "g").write_text("deep\n")
    (d / "ln").symlink_to("/etc/passwd")
    os.chown(d / "f", 1234, 1234)
    os.chmod(d / "sub" / "g", 0o750)
    return d


def _tar(entries: list[tuple[str, bytes | None, str]]) -> bytes:
    """A tar of (name, data or None for a dir, symlink target or "")."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, link in entries:
            info = tarfile.TarInfo(name)
            if link:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            elif data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.uid, info.gid = len(data), 1000, 1000
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _cp_stdin(cli: CLI, data: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cli.argv("cp", *args), input=data, capture_output=True,
                          env=cli.env, timeout=60)


def test_cp_both_ways_on_a_running_container(cli: CLI, store: Store, host_tree: Path,
                                             tmp_path: Path) -> None:
    cli.ok("run", "-d", "--name", "cpr", "busybox", "sh", "-c",
           "ln -s / /root/up; ln -s /etc /root/etclink; echo mine > /root/inside; "
           f"ln -s {tmp_path}/secret /root/secret; exec sleep 1000")
    (tmp_path / "secret").write_text("host only\n")
    try:
        wait_for(lambda: cli("exec", "cpr", "test", "-L", "/root/secret").returncode == 0,
                 what="the container's links")
        # into an existing directory: the source directory goes inside it, owned by root
        cli.ok("cp", str(host_tree), "cpr:/tmp/")
        listing = cli.ok("exec", "cpr", "stat", "-c", "%n %u %a", "/tmp/d/f",
                         "/tmp/d/sub/g").split("\n")
        assert listing[:2] == ["/tmp/d/f 0 644", "/tmp/d/sub/g 0 750"]
        assert cli.ok("exec", "cpr", "readlink", "/tmp/d/ln") == "/etc/passwd\n"
        # -a keeps owners; a missing destination becomes the directory's new name
        cli.ok("cp", "-a", str(host_tree), "cpr:/tmp/d2")
        assert cli.ok("exec", "cpr", "stat", "-c", "%u", "/tmp/d2/f") == "1234\n"
        # dir/. copies the contents
        cli.ok("cp", f"{host_tree}/.", "cpr:/root")
        assert cli.ok("exec", "cpr", "cat", "/root/f", "/root/sub/g") == "hello\ndeep\n"
        # symlinks resolve inside the container's root, never on the host
        cli.ok("cp", str(host_tree / "f"), "cpr:/root/up/etc/planted")
        assert cli.ok("exec", "cpr", "cat", "/etc/planted") == "hello\n"
        assert not Path("/etc/planted").exists()
        cli.ok("cp", "cpr:/root/etclink/passwd", str(tmp_path / "pw"))
        assert (tmp_path / "pw").read_text().startswith("root:x:0:0:root:/root:/bin/sh\n"
                                                        "user:x:1000")
        res = cli("cp", "-L", "cpr:/root/secret", str(tmp_path / "leak"))
        assert res.returncode == 1 and "Could not find the file" in res.stderr
        assert not (tmp_path / "leak").exists()
        cli.ok("exec", "cpr", "sh", "-c", "cp /bin/busybox /root/suid; chmod 4755 /root/suid")
        cli.ok("cp", "cpr:/root/suid", str(tmp_path / "suid"))
        assert os.stat(tmp_path / "suid").st_mode & 0o7777 == 0o755  # no setuid-root copy
        cli.ok("cp", "-a", "cpr:/root/suid", str(tmp_path / "suid-a"))
        assert os.stat(tmp_path / "suid-a").st_mode & 0o7777 == 0o4755  # -a: as it is
        os.unlink(tmp_path / "suid-a")
        cli.ok("cp", "cpr:/root/up/../../root/inside", str(tmp_path / "inside"))
        assert (tmp_path / "inside").read_text() == "mine\n"
        assert os.stat(tmp_path / "inside").st_uid == os.getuid()
        # - : a tar stream on stdout and on stdin
        out = subprocess.run(cli.argv("cp", "cpr:/root/inside", "-"), capture_output=True,
                             env=cli.env, timeout=60, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(out)) as tar:
            member = tar.getmember("inside")
            assert (member.uid, tar.extractfile(member).read()) == (0, b"mine\n")  # type: ignore[union-attr]
        put = _cp_stdin(cli, _tar([("in", None, ""), ("in/x", b"tar\n", "")]), "-a", "-",
                        "cpr:/tmp")
        assert put.returncode == 0, put.stderr
        assert cli.ok("exec", "cpr", "stat", "-c", "%u", "/tmp/in/x") == "1000\n"
        # hostile archives: .. and writing through a symlink are refused
        for bad in (_tar([("../escape", b"x", "")]),
                    _tar([("lnk", None, "/etc"), ("lnk/passwd", b"owned\n", "")])):
            refused = _cp_stdin(cli, bad, "-", "cpr:/tmp")
            assert refused.returncode == 1 and refused.stderr.count(b"\n") == 1
        assert "owned" not in cli.ok("exec", "cpr", "cat", "/etc/passwd")
        # errors as docker's
        res = cli("cp", "cpr:/nope", str(tmp_path / "x"))
        assert res.returncode == 1
        assert res.stderr == "unionfs: error: Could not find the file /nope in container cpr\n"
        assert cli("cp", str(tmp_path), str(tmp_path / "y")).returncode != 0
        res = cli("cp", str(host_tree), "cpr:/root/inside")
        assert res.returncode == 1 and "cannot copy a directory to a file" in res.stderr
        # the copy went through the union: into the upper, the image untouched
        upper = state.container_upper(store, "cpr")
        assert upper is not None and (upper / "etc/planted").read_text() == "hello\n"
        assert not (store.image("busybox").layer_dirs[0] / "etc/planted").exists()
    finally:
        rm(cli, "cpr")


def test_cp_into_and_out_of_a_stopped_container_copies_up(cli: CLI, store: Store,
                                                          tmp_path: Path) -> None:
    cli.ok("run", "--name", "cps", "busybox", "sh", "-c", "echo before > /root/kept")
    try:
        (tmp_path / "motd").write_text("replaced\n")
        cli.ok("cp", str(tmp_path / "motd"), "cps:/etc/motd")
        cli.ok("cp", "cps:/root/kept", str(tmp_path / "kept"))
        assert (tmp_path / "kept").read_text() == "before\n"
        cli.ok("cp", "cps:/etc/motd", str(tmp_path / "back"))
        assert (tmp_path / "back").read_text() == "replaced\n"
        assert "A /etc/motd" in cli.ok("diff", "cps") or "C /etc/motd" in cli.ok("diff", "cps")
        assert (store.image("busybox").layer_dirs[0] / "etc/motd").read_text() == "image one\n"
        upper = state.container_upper(store, "cps")
        assert upper is not None and (upper / "etc/motd").read_text() == "replaced\n"
        out = subprocess.run(cli.argv("cp", "cps:/etc", "-"), capture_output=True,
                             env=cli.env, timeout=60, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(out)) as tar:
            motd = tar.extractfile("etc/motd")
            assert motd is not None and motd.read() == b"replaced\n"
    finally:
        rm(cli, "cps")


# -- export ---------------------------------------------------------------------------------


def test_export_is_the_merged_tree_without_the_runtime_files(cli: CLI, tmp_path: Path) -> None:
    cli.ok("run", "-d", "--name", "exp", "-v", f"{tmp_path}:/data/vol", "busybox", "sh", "-c",
           "echo new > /root/new; rm /etc/motd; exec sleep 1000")
    try:
        wait_for(lambda: cli("exec", "exp", "test", "-e", "/etc/motd").returncode == 1,
                 what="the container's changes")
        out = tmp_path / "exp.tar"
        cli.ok("export", "-o", str(out), "exp")
        with tarfile.open(out) as tar:
            listed = set(tar.getnames())
            new = tar.extractfile("root/new")
            assert new is not None and new.read() == b"new\n"
        assert {"bin/busybox", "etc/passwd", "root/new"} <= listed
        assert "etc/motd" not in listed  # deleted in the container
        assert not listed & {"etc/hostname", "etc/hosts", "etc/resolv.conf", "data",
                             "data/vol"}
        streamed = subprocess.run(cli.argv("export", "exp"), capture_output=True,
                                  env=cli.env, timeout=60, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(streamed)) as tar:
            assert set(tar.getnames()) == listed
        cli.ok("stop", "-t", "0", "exp")
        cli.ok("export", "-o", str(out), "exp")
        with tarfile.open(out) as tar:
            assert set(tar.getnames()) == listed
        assert cli("export", "nosuch").returncode != 0
    finally:
        rm(cli, "exp")


# -- prune ----------------------------------------------------------------------------------


@pytest.fixture
def own_store(tmp_path: Path) -> Iterator[CLI]:
    """A store of its own (prune removes what nothing uses: never the session's images)."""
    root = tmp_path / "store"
    Store.open(root).import_rootfs(build_busybox_rootfs(tmp_path / "rootfs"), "busybox")
    cli = CLI(root, dict(os.environ, UNIONFS_STORE=str(root)))
    yield cli
    for cid in cli.ok("ps", "-aq").split():
        cli("rm", "-f", cid)


def test_container_prune_removes_stopped_ones(own_store: CLI) -> None:
    cli = own_store
    cli.ok("run", "--name", "p-exited", "busybox", "sh", "-c", "head -c 5000 /bin/busybox "
           "> /root/blob")
    cli.ok("run", "-d", "--name", "p-up", "busybox", "sleep", "1000")
    gone = Store.open(cli.store_root)
    exited_id = state.get(gone, "p-exited").id
    asked = cli("container", "prune", input="n\n")
    assert asked.returncode == 0 and asked.stdout.startswith(
        "WARNING! This will remove all stopped containers.\n"
        "Are you sure you want to continue? [y/N] ")
    assert state.find(gone, "p-exited") is not None
    res = cli("container", "prune", input="y\n")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.split("[y/N] ", 1)[1].splitlines()
    assert lines == ["Deleted Containers:", exited_id, "", "Total reclaimed space: 5kB"]
    assert state.find(gone, "p-exited") is None and running(gone, "p-up")
    assert cli.ok("container", "prune", "-f") == "Total reclaimed space: 0B\n"


def test_image_prune_dangling_and_all(own_store: CLI) -> None:
    cli = own_store
    cli.ok("run", "--name", "ip-src", "busybox", "sh", "-c", "echo one > /root/x")
    cli.ok("commit", "ip-src", "ip:v")
    first = Store.open(cli.store_root).image("ip:v").id
    cli.ok("commit", "ip-src", "ip:v", "-m", "again")  # the first one is dangling now
    cli.ok("rm", "ip-src")
    res = cli("image", "prune", "-f")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "Deleted Images:" and f"deleted: {first}" in lines
    assert lines[-2:] == ["", lines[-1]] and lines[-1].startswith("Total reclaimed space: ")
    images = Store.open(cli.store_root).images()
    assert {t for im in images for t in im.tags} == {"busybox:latest", "ip:v"}
    cli.ok("run", "-d", "--name", "ip-user", "busybox", "sleep", "1000")
    res = cli("image", "prune", "-a", "-f")
    assert res.returncode == 0, res.stderr
    assert "untagged: ip:v" in res.stdout.splitlines()
    left = Store.open(cli.store_root).images()
    assert [im.tags for im in left] == [["busybox:latest"]]  # a container uses it
    assert cli.ok("image", "prune", "-f") == "Total reclaimed space: 0B\n"
