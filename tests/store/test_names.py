"""Image names: docker's reference grammar, ``images [REPO[:TAG]] -q --filter``, load names,
``save --format docker-archive``."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from unionfs.errors import UserError
from unionfs.store.registry.reference import parse

from .helpers import assert_one_line_error, busybox_rootfs, ok, run_cli, store_state


@pytest.mark.parametrize(("text", "want"), [
    ("debian", "docker.io/library/debian:latest"),
    ("debian:12", "docker.io/library/debian:12"),
    ("user/app:1", "docker.io/user/app:1"),
    ("docker.io/debian", "docker.io/library/debian:latest"),
    ("index.docker.io/library/debian", "docker.io/library/debian:latest"),
    ("localhost/app", "localhost/app:latest"),
    ("127.0.0.1:5000/web:1", "127.0.0.1:5000/web:1"),
    ("quay.io/a/b/c:v1.2", "quay.io/a/b/c:v1.2"),
])
def test_reference_normalisation(text: str, want: str) -> None:
    ref = parse(text)
    assert f"{ref.repository}:{ref.tag or 'latest'}" == want


def test_familiar_names_and_digests() -> None:
    assert parse("debian").familiar_name == "debian"
    assert parse("docker.io/user/app").familiar_name == "user/app"
    digest = "sha256:" + "a" * 64
    ref = parse(f"127.0.0.1:5000/web@{digest}")
    assert ref.digest == digest and ref.ref == digest and ref.tag is None


@pytest.mark.parametrize("bad", ["Debian", "UPPER/x:1", "x:" + "t" * 129, "x:-bad", "",
                                 "a//b", "-a", "x@sha256:abc", "a" * 256, " x"])
def test_bad_references(bad: str) -> None:
    with pytest.raises(UserError):
        parse(bad)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    ok(store, "import", str(busybox_rootfs(tmp_path / "rootfs")), "--tag", "fedora:38")
    ok(store, "tag", "fedora:38", "fedora:latest")
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "f").write_text("x")
    ok(store, "commit", "--upper", str(upper), "--parent", "fedora:38", "web:1")
    return store


def test_tag_follows_the_reference_grammar(store: Path) -> None:
    before = store_state(store)
    assert_one_line_error(run_cli(store, "tag", "web:1", "Web:2"), "lowercase")
    assert_one_line_error(run_cli(store, "tag", "web:1", "web:" + "t" * 300), "tag")
    assert store_state(store) == before


def test_images_repository_quiet_and_filters(store: Path) -> None:
    table = ok(store, "images", "fedora").splitlines()
    assert len(table) == 3 and all(line.startswith("fedora") for line in table[1:])
    only = ok(store, "images", "fedora:38").splitlines()
    assert len(only) == 2 and only[1].split()[:2] == ["fedora", "38"]
    assert ok(store, "images", "docker.io/library/fedora:38") == ok(store, "images",
                                                                     "fedora:38")
    ids = ok(store, "images", "-q").split()
    assert len(ids) == 2 and all(len(i) == 12 for i in ids)
    assert ok(store, "images", "-q", "--filter", "reference=web*").split() == [
        json.loads(ok(store, "inspect", "web:1"))[0]["Id"][7:19]]
    assert ok(store, "images", "-q", "-f", "since=fedora:38").split() == ok(
        store, "images", "-q", "web").split()
    assert ok(store, "images", "-q", "--filter", "dangling=true") == ""
    assert ok(store, "images", "nothing-here", "-q") == ""
    assert_one_line_error(run_cli(store, "images", "--filter", "color=red"), "invalid filter")


def test_load_reports_what_it_replaced_and_unnamed_images(tmp_path: Path, store: Path) -> None:
    ok(store, "save", "web:1", "-o", str(tmp_path / "web.tar"))
    other = tmp_path / "other"
    ok(other, "import", str(busybox_rootfs(tmp_path / "r2")), "--tag", "web:1", "-m", "older")
    old_id = json.loads(ok(other, "inspect", "web:1"))[0]["Id"]
    out = ok(other, "load", "-i", str(tmp_path / "web.tar")).splitlines()
    assert out == [f"The image web:1 already exists, renaming the old one with ID {old_id} "
                   "to empty string", "Loaded image: web:1"]
    # an archive without names loads by id, and every command takes that id
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(tmp_path / "web.tar") as tar:
        tar.extractall(layout, filter="data")
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0].pop("annotations")
    (layout / "index.json").write_text(json.dumps(index))
    fresh = tmp_path / "fresh"
    line = ok(fresh, "load", "-i", str(layout)).strip()
    assert line.startswith("Loaded image ID: sha256:")
    image_id = line.rsplit(" ", 1)[1]
    ok(fresh, "history", image_id)
    ok(fresh, "history", image_id[7:19])


def test_two_images_under_one_name_are_refused(tmp_path: Path, store: Path) -> None:
    ok(store, "save", "web:1", "-o", str(tmp_path / "a.tar"))
    ok(store, "save", "fedora:38", "-o", str(tmp_path / "b.tar"))
    layout = tmp_path / "layout"
    layout.mkdir()
    for name in ("a.tar", "b.tar"):
        with tarfile.open(tmp_path / name) as tar:
            tar.extractall(layout / name, filter="data")
    merged = layout / "merged"
    subprocess.run(["cp", "-r", str(layout / "a.tar"), str(merged)], check=True)
    subprocess.run(f"cp -n {layout}/b.tar/blobs/sha256/* {merged}/blobs/sha256/", shell=True,
                   check=True)
    index = json.loads((merged / "index.json").read_text())
    other = json.loads((layout / "b.tar" / "index.json").read_text())["manifests"][0]
    other["annotations"] = index["manifests"][0]["annotations"]
    index["manifests"].append(other)
    (merged / "index.json").write_text(json.dumps(index))
    fresh = tmp_path / "fresh"
    ok(fresh, "images")
    before = store_state(fresh)
    assert_one_line_error(run_cli(fresh, "load", "-i", str(merged)), "two different images",
                          "web:1")
    assert store_state(fresh) == before


def test_save_docker_archive_is_read_by_skopeo_and_us(tmp_path: Path, store: Path) -> None:
    out = tmp_path / "web.docker.tar"
    ok(store, "save", "--format", "docker-archive", "web:1", "-o", str(out))
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert "manifest.json" in names and "repositories" in names and "index.json" not in names
    again = tmp_path / "again.tar"
    ok(store, "save", "--format", "docker-archive", "web:1", "-o", str(again))
    assert out.read_bytes() == again.read_bytes()
    info = json.loads(subprocess.run(["skopeo", "inspect", f"docker-archive:{out}"],
                                     capture_output=True, text=True, check=True).stdout)
    assert len(info["Layers"]) == 2
    fresh = tmp_path / "fresh"
    assert ok(fresh, "load", "-i", str(out)).strip() == "Loaded image: web:1"
    assert json.loads(ok(fresh, "inspect", "web:1"))[0]["Id"] == json.loads(
        ok(store, "inspect", "web:1"))[0]["Id"]


@pytest.mark.parametrize(("ref_name", "report"), [
    ("1.0", "Loaded image: 1.0:latest"),  # a bare tag is a repository, as podman reads it
    ("stable", "Loaded image: stable:latest"),
    ("Stable", "Loaded image ID: sha256:"),  # a valid tag, but no repository: by id
    ("localhost/app:2", "Loaded image: localhost/app:2"),
    ("docker.io/library/web:3", "Loaded image: web:3"),
])
def test_load_names_of_a_layout_with_only_a_ref_name(tmp_path: Path, store: Path,
                                                     ref_name: str, report: str) -> None:
    """A layout (as ``skopeo copy ... oci:DIR:REF`` writes) naming its image only by
    ``org.opencontainers.image.ref.name``."""
    ok(store, "save", "web:1", "-o", str(tmp_path / "web.tar"))
    layout = tmp_path / "layout"
    with tarfile.open(tmp_path / "web.tar") as tar:
        tar.extractall(layout, filter="data")
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0]["annotations"] = {"org.opencontainers.image.ref.name": ref_name}
    (layout / "index.json").write_text(json.dumps(index))
    fresh = tmp_path / "fresh"
    out = ok(fresh, "load", "-i", str(layout)).strip()
    assert out.startswith(report), out
    wanted = json.loads(ok(store, "inspect", "web:1"))[0]["Id"]
    shown = out.rsplit(" ", 1)[1] if "ID:" in out else out.removeprefix("Loaded image: ")
    assert json.loads(ok(fresh, "inspect", shown))[0]["Id"] == wanted
    ok(fresh, "history", shown)
