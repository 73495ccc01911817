"""The mount plan as data: what is mounted where, in which order, with which flags."""

from __future__ import annotations

from unionfs.runtime import linux
from unionfs.runtime.mounts import MountStep, Symlink, plan
from unionfs.runtime.spec import Spec, Volume

ROOT = "/c/rootfs"
STATE = "/c"


def _targets(steps: list) -> list[str]:  # type: ignore[type-arg]
    return [s.target if isinstance(s, MountStep) else s.path for s in steps]


def test_order_private_first_then_root_proc_dev() -> None:
    steps = plan(Spec("img"), ROOT, STATE, userns=False)
    first = steps[0]
    assert isinstance(first, MountStep) and first.target == "/"
    assert first.flags == linux.MS_REC | linux.MS_PRIVATE
    assert steps[1] == MountStep(ROOT, ROOT, None, linux.MS_BIND | linux.MS_REC, create=None)
    targets = _targets(steps)
    assert targets.index(f"{ROOT}/proc") < targets.index(f"{ROOT}/dev")
    assert targets.index(f"{ROOT}/dev") < targets.index(f"{ROOT}/dev/null")


def test_minimal_dev() -> None:
    steps = plan(Spec("img"), ROOT, STATE, userns=False)
    by_target = {s.target: s for s in steps if isinstance(s, MountStep)}
    assert by_target[f"{ROOT}/dev"].fstype == "tmpfs"
    for dev in ("null", "zero", "full", "random", "urandom", "tty"):
        step = by_target[f"{ROOT}/dev/{dev}"]
        assert step.source == f"/dev/{dev}" and step.flags == linux.MS_BIND
        assert step.create == "file"
    pts = by_target[f"{ROOT}/dev/pts"]
    assert pts.fstype == "devpts" and "newinstance" in (pts.data or "")
    assert by_target[f"{ROOT}/dev/shm"].fstype == "tmpfs"
    links = {s.path: s.target for s in steps if isinstance(s, Symlink)}
    assert links[f"{ROOT}/dev/ptmx"] == "pts/ptmx"
    assert links[f"{ROOT}/dev/fd"] == "/proc/self/fd"


def test_sys_is_read_only_sysfs_or_a_read_only_bind() -> None:
    own = {s.target: s for s in plan(Spec("img", network="none"), ROOT, STATE, userns=True)
           if isinstance(s, MountStep)}
    assert own[f"{ROOT}/sys"].fstype == "sysfs"
    assert own[f"{ROOT}/sys"].flags & linux.MS_RDONLY
    # A user namespace sharing the host's network may not mount sysfs: bind it read-only.
    steps = [s for s in plan(Spec("img", network="host"), ROOT, STATE, userns=True)
             if isinstance(s, MountStep) and s.target == f"{ROOT}/sys"]
    assert steps[0].source == "/sys" and steps[0].flags & linux.MS_BIND
    assert steps[1].flags & linux.MS_REMOUNT and steps[1].flags & linux.MS_RDONLY


def test_volumes_etc_files_and_read_only_root(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "f").write_text("x")
    spec = Spec("img", read_only=True, volumes=[
        Volume(str(tmp_path), "/data", True), Volume(str(tmp_path / "f"), "/etc/f", False)])
    steps = [s for s in plan(spec, ROOT, STATE, userns=False) if isinstance(s, MountStep)]
    data = [s for s in steps if s.target == f"{ROOT}/data"]
    assert data[0].source == str(tmp_path) and data[0].create == "dir"
    assert data[1].flags & linux.MS_REMOUNT and data[1].flags & linux.MS_RDONLY
    assert [s.create for s in steps if s.target == f"{ROOT}/etc/f"] == ["file"]
    for name in ("hostname", "hosts", "resolv.conf"):
        assert any(s.source == f"{STATE}/{name}" and s.target == f"{ROOT}/etc/{name}"
                   for s in steps)
    last = steps[-1]
    assert last.target == ROOT and last.flags & linux.MS_REMOUNT and last.flags & linux.MS_RDONLY


def test_writable_root_is_not_remounted() -> None:
    steps = [s for s in plan(Spec("img"), ROOT, STATE, userns=False) if isinstance(s, MountStep)]
    assert not [s for s in steps if s.target == ROOT and s.flags & linux.MS_REMOUNT]


def test_targets_never_leave_the_root(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from unionfs.runtime.mounts import in_root

    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "data").symlink_to("/etc")  # absolute: means the container's /etc
    (root / "up").symlink_to("../../../..")
    (root / "loop").symlink_to("loop")
    (root / "etc" / "hostname").symlink_to("/../../host-file")
    r = str(root)
    assert in_root(r, "/data/x") == f"{r}/etc/x"
    assert in_root(r, "/up/etc") == f"{r}/etc"
    assert in_root(r, "/../../etc/./passwd") == f"{r}/etc/passwd"
    assert in_root(r, "/etc/hostname") == f"{r}/host-file"
    try:
        in_root(r, "/loop/x")
    except OSError as exc:
        assert exc.errno == 40  # ELOOP
    else:
        raise AssertionError("a symlink loop must fail")
    spec = Spec("img", volumes=[Volume(str(tmp_path), "/data", False)])
    steps = [s for s in plan(spec, r, STATE, userns=False) if isinstance(s, MountStep)]
    assert any(s.source == str(tmp_path) and s.target == f"{r}/etc" for s in steps)
    assert any(s.target == f"{r}/host-file" for s in steps)  # /etc/hostname, kept inside
