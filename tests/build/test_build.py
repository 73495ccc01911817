"""``unionfs build`` on busybox images: every instruction, the cache, multi-stage,
.dockerignore, build args, history, save/load and umoci, and bad input.

These run containers: run them under ``flock /tmp/unionfs-containers.lock``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.runtime.conftest import CLI

EVERYTHING = """\
# every instruction
ARG BASE=busybox
FROM $BASE AS base
ARG GREETING=hello
ENV APP_HOME=/opt/app \\
    MODE=prod
LABEL org.example.name="demo app" version=1
WORKDIR $APP_HOME
COPY --chown=user:user site/ ./site/
ADD bundle.tar.gz /opt/bundle/
COPY ["notes.txt", "./"]
RUN echo "$GREETING $MODE" > greeting.txt && chown user greeting.txt
RUN ["/bin/sh", "-c", "echo exec-form > /opt/exec.txt"]
SHELL ["/bin/sh", "-ec"]
RUN test "$(pwd)" = /opt/app
EXPOSE 8080 53/udp
VOLUME /data
STOPSIGNAL SIGQUIT
USER user
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat greeting.txt site/index.html; echo $MODE; id -u; pwd"]
MAINTAINER ops@example.com
"""


def make_context(root: Path, files: dict[str, str], containerfile: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "Containerfile").write_text(containerfile)
    return root


def build(cli: CLI, ctx: Path, *args: str) -> str:
    return cli.ok("build", *args, str(ctx), timeout=300)


def counted_context(root: Path, counter: Path) -> Path:
    """A build whose RUN steps each append their name to ``counter`` (bound in at /count)."""
    counter.mkdir(parents=True, exist_ok=True)
    (counter / "runs").touch()
    return make_context(root, {"a.txt": "a\n", "b.txt": "b\n"}, """\
FROM busybox
COPY a.txt /a.txt
RUN echo first >> /count/runs && cp /a.txt /first.txt
COPY b.txt /b.txt
RUN echo second >> /count/runs && cat /a.txt /b.txt > /second.txt
CMD ["cat", "/second.txt"]
""")


def runs(counter: Path) -> list[str]:
    return (counter / "runs").read_text().split()


def test_every_instruction(cli: CLI, tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx", {"site/index.html": "<h1>site</h1>\n",
                                          "notes.txt": "notes\n"}, EVERYTHING)
    bundle = tmp_path / "bundle"
    (bundle / "inner").mkdir(parents=True)
    (bundle / "inner" / "file").write_text("unpacked\n")
    with tarfile.open(ctx / "bundle.tar.gz", "w:gz") as tar:
        tar.add(bundle / "inner", arcname="inner")
    out = build(cli, ctx, "-t", "every:1")
    assert "STEP 1/19: FROM $BASE AS base" in out and "STEP 19/19: MAINTAINER" in out
    try:
        res = cli("run", "--rm", "every:1")
        assert res.returncode == 0, res.stderr
        assert res.stdout.split("\n") == ["hello prod", "<h1>site</h1>", "prod", "1000",
                                          "/opt/app", ""]
        info = json.loads(cli.ok("inspect", "every:1"))[0]
        cfg = info["Config"]
        assert cfg["Entrypoint"] == ["/bin/sh", "-c"]
        assert cfg["Env"] == ["APP_HOME=/opt/app", "MODE=prod"]
        assert cfg["Labels"] == {"org.example.name": "demo app", "version": "1"}
        assert cfg["ExposedPorts"] == {"53/udp": {}, "8080/tcp": {}}
        assert cfg["Volumes"] == {"/data": {}} and cfg["StopSignal"] == "SIGQUIT"
        assert cfg["User"] == "user" and cfg["WorkingDir"] == "/opt/app"
        assert cfg["Shell"] == ["/bin/sh", "-ec"] and info["Author"] == "ops@example.com"
        assert len(info["RootFS"]["Layers"]) == 1 + 6  # base + 3 copies/adds + 3 runs
        files = cli.ok("run", "--rm", "--entrypoint", "", "-u", "0", "every:1", "sh", "-c",
                       "stat -c '%U %n' site/index.html greeting.txt; cat /opt/exec.txt "
                       "/opt/bundle/inner/file notes.txt; ls -d /etc/hostname 2>&1")
        assert files.splitlines()[:5] == ["user site/index.html", "user greeting.txt",
                                         "exec-form", "unpacked", "notes"]
        cli.ok("run", "--name", "labelled", "--entrypoint", "", "every:1", "true")
        try:  # a container shows its image's labels, as docker's inspect does
            container = json.loads(cli.ok("inspect", "labelled"))[0]
            assert container["Config"]["Labels"] == cfg["Labels"]
        finally:
            cli.ok("rm", "labelled")
        history = cli.ok("history", "--no-trunc", "every:1")
        for text in ("COPY --chown=user:user site/ ./site/", "ADD bundle.tar.gz /opt/bundle/",
                     "RUN /bin/sh -c echo \"$GREETING $MODE\" > greeting.txt", "EXPOSE 8080",
                     "WORKDIR $APP_HOME", 'CMD ["cat greeting.txt'):
            assert text in history, (text, history)
        assert cli.ok("inspect", "-f", "{{.Config.Cmd}}", "every:1").strip() == \
            "[cat greeting.txt site/index.html; echo $MODE; id -u; pwd]"
    finally:
        cli("rmi", "every:1")


def test_image_layers_hold_no_mount_targets(cli: CLI, tmp_path: Path, store_root: Path
                                            ) -> None:
    ctx = make_context(tmp_path / "ctx", {}, "FROM busybox\nRUN echo x > /made\n")
    build(cli, ctx, "-t", "clean:1")
    try:
        info = json.loads(cli.ok("inspect", "clean:1"))[0]
        top = Path(info["Layers"][0]["Dir"])
        names = set(os.listdir(top))
        assert "made" in names and not names & {"proc", "sys", "dev"}, names
        for rel in ("etc/hostname", "etc/hosts", "etc/resolv.conf"):
            assert not os.path.lexists(top / rel), rel  # the runtime's mount targets
    finally:
        cli("rmi", "clean:1")


def test_run_steps_network_and_user(cli: CLI, tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx", {}, """\
FROM busybox
RUN ls /sys/class/net > /default-net
RUN --network=none ls /sys/class/net > /none-net
USER user
RUN id -u > /tmp/uid
""")
    build(cli, ctx, "-t", "nets:1")
    build(cli, ctx, "--network", "none", "--no-cache", "-t", "nets:2")
    try:
        host = sorted(os.listdir("/sys/class/net"))
        assert cli.ok("run", "--rm", "nets:1", "cat", "/default-net").split() == host
        for tag in ("nets:1", "nets:2"):
            assert cli.ok("run", "--rm", tag, "cat", "/none-net").split() == ["lo"]
        assert cli.ok("run", "--rm", "nets:2", "cat", "/default-net").split() == ["lo"]
        assert cli.ok("run", "--rm", "nets:1", "cat", "/tmp/uid") == "1000\n"  # USER's RUN
    finally:
        cli("rmi", "nets:2")
        cli("rmi", "nets:1")


def test_second_build_is_served_from_cache(cli: CLI, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    ctx = counted_context(tmp_path / "ctx", counter)
    vol = ["-v", f"{counter}:/count"]
    first = build(cli, ctx, *vol, "-t", "cached:1")
    assert runs(counter) == ["first", "second"] and "Using cache" not in first
    assert len(re.findall(r"^--> \d+\.\d\ds$", first, re.M)) == 5  # each step's time
    try:
        second = build(cli, ctx, *vol, "-t", "cached:2")
        assert runs(counter) == ["first", "second"]  # no RUN executed again
        assert second.count("--> Using cache") == 5
        assert first.strip().splitlines()[-1] == second.strip().splitlines()[-1]  # same id
        (ctx / "b.txt").write_text("changed\n")
        third = build(cli, ctx, *vol, "-t", "cached:3")
        assert runs(counter) == ["first", "second", "second"]  # only the step after COPY b
        assert third.count("--> Using cache") == 2  # COPY a, RUN first
        assert cli.ok("run", "--rm", "cached:3") == "a\nchanged\n"
        build(cli, ctx, *vol, "--no-cache", "-t", "cached:4")
        assert runs(counter) == ["first", "second", "second", "first", "second"]
    finally:
        for tag in ("cached:4", "cached:3", "cached:2", "cached:1"):
            cli("rmi", tag)


def test_multi_stage_copy_from_and_target(cli: CLI, tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx", {"src.txt": "source\n"}, """\
FROM busybox AS build
COPY src.txt /work/src.txt
RUN mkdir -p /out && tr a-z A-Z < /work/src.txt > /out/product && rm /bin/vi
FROM busybox
COPY --from=build /out/product /app/product
COPY --from=0 /work/src.txt /app/
CMD ["cat", "/app/product", "/app/src.txt"]
""")
    build(cli, ctx, "-t", "multi:1")
    try:
        assert cli.ok("run", "--rm", "multi:1") == "SOURCE\nsource\n"
        assert cli("run", "--rm", "multi:1", "test", "-e", "/work/src.txt").returncode == 1
        assert cli("run", "--rm", "multi:1", "test", "-e", "/bin/vi").returncode == 0
        build(cli, ctx, "--target", "build", "-t", "multi:build")
        assert cli.ok("run", "--rm", "multi:build", "cat", "/out/product") == "SOURCE\n"
        assert cli("run", "--rm", "multi:build", "test", "-e", "/bin/vi").returncode == 1
    finally:
        cli("rmi", "multi:build")
        cli("rmi", "multi:1")


def test_copy_globs_match_one_directory_level(cli: CLI, tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx", {
        "a.txt": "a\n", "b.txt": "b\n", "c.md": "c\n", "sub/d.txt": "d\n",
        "skip.txt": "s\n", ".dockerignore": "skip.txt\n"}, """\
FROM busybox
COPY *.txt /dst/
COPY sub/*.txt ?.md /sub/
CMD ["sh", "-c", "ls /dst; echo --; ls /sub"]
""")
    build(cli, ctx, "-t", "globs:1")
    try:  # '*' does not cross '/' (Go's filepath.Match, as docker's COPY); ignored stays out
        assert cli.ok("run", "--rm", "globs:1").split() == ["a.txt", "b.txt", "--", "c.md",
                                                            "d.txt"]
    finally:
        cli("rmi", "globs:1")


def test_dockerignore(cli: CLI, tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx", {
        "app/main.sh": "echo main\n", "app/debug.log": "noise\n", "app/keep.log": "kept\n",
        "secrets/key": "k\n", ".dockerignore": "**/*.log\n!app/keep.log\nsecrets\n"},
        "FROM busybox\nCOPY . /ctx/\nCMD [\"find\", \"/ctx\", \"-type\", \"f\"]\n")
    build(cli, ctx, "-t", "ignored:1")
    try:
        found = sorted(cli.ok("run", "--rm", "ignored:1").split())
        assert found == ["/ctx/.dockerignore", "/ctx/Containerfile", "/ctx/app/keep.log",
                         "/ctx/app/main.sh"]
        (ctx / "app" / "debug.log").write_text("more noise\n")  # ignored: cache still valid
        assert "Using cache" in build(cli, ctx, "-t", "ignored:1")
        res = cli("build", "-t", "ignored:2", "-f", str(ctx / "Other"), str(ctx))
        assert res.returncode != 0
        (ctx / "Other").write_text("FROM busybox\nCOPY secrets/key /key\n")
        res = cli("build", "-t", "ignored:2", "-f", str(ctx / "Other"), str(ctx))
        assert res.returncode == 2 and "Other:2" in res.stderr, res.stderr
    finally:
        cli("rmi", "ignored:1")


def test_build_args(cli: CLI, tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx", {}, """\
ARG GLOBAL=from-global
FROM busybox
ARG FLAVOUR=plain
ARG UNSET
ARG GLOBAL
ENV SHOWN=${FLAVOUR}
RUN echo "$FLAVOUR/${UNSET:-none}" > /flavour && echo $GLOBAL > /global
CMD ["sh", "-c", "cat /flavour; echo $SHOWN; echo ${FLAVOUR:-gone}"]
""")
    build(cli, ctx, "-t", "args:1")
    try:
        # ARGs are gone at run time
        assert cli.ok("run", "--rm", "args:1") == "plain/none\nplain\ngone\n"
        assert cli.ok("run", "--rm", "args:1", "cat", "/global") == "from-global\n"
        out = build(cli, ctx, "--build-arg", "FLAVOUR=spicy", "--build-arg", "UNSET=set",
                    "-t", "args:2")
        assert "Using cache" not in out.split("RUN", 1)[1]  # a changed arg: RUN runs again
        assert cli.ok("run", "--rm", "args:2") == "spicy/set\nspicy\ngone\n"
        hist = cli.ok("history", "--no-trunc", "args:2")
        assert "|3 FLAVOUR=spicy GLOBAL=from-global UNSET=set RUN" in hist
        info = json.loads(cli.ok("inspect", "args:2"))[0]
        assert info["Config"]["Env"] == ["SHOWN=spicy"]  # ARGs are not kept in the image
    finally:
        cli("rmi", "args:2")
        cli("rmi", "args:1")


def _umoci_config(tmp_path: Path, cli: CLI, ref: str) -> dict[str, object]:
    archive = tmp_path / f"{ref.replace(':', '_')}.tar"
    cli.ok("save", "-o", str(archive), ref)
    layout = tmp_path / "layout"
    shutil.rmtree(layout, ignore_errors=True)
    layout.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(layout, filter="data")
    bundle = tmp_path / "bundle"
    shutil.rmtree(bundle, ignore_errors=True)
    index = json.loads((layout / "index.json").read_text())
    tag = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)], check=True,
                   capture_output=True)
    config: dict[str, object] = json.loads((bundle / "config.json").read_text())
    shutil.rmtree(bundle)
    return config


def test_built_and_committed_images_survive_save_load_and_umoci(cli: CLI, tmp_path: Path
                                                                 ) -> None:
    ctx = make_context(tmp_path / "ctx", {}, """\
FROM busybox
ENV GREETING=hi
WORKDIR /srv
USER 1000:1000
ENTRYPOINT ["/bin/echo"]
CMD ["from", "build"]
""")
    build(cli, ctx, "-t", "portable:built")
    cli.ok("run", "--name", "portable-c", "-e", "X=1", "-w", "/tmp", "busybox", "true")
    cli.ok("commit", "portable-c", "portable:committed", "--change", 'CMD ["sh","-c","pwd"]',
           "--change", "USER nobody")
    other = tmp_path / "other-store"
    try:
        for ref in ("portable:built", "portable:committed"):
            archive = tmp_path / "image.tar"
            cli.ok("save", "-o", str(archive), ref)
            res = subprocess.run([*cli.argv("load", "-i", str(archive), "--store", str(other))],
                                 capture_output=True, text=True, env=cli.env)
            assert res.returncode == 0, res.stderr
            mine = json.loads(cli.ok("inspect", ref))[0]["Config"]
            theirs = json.loads(subprocess.run(
                cli.argv("inspect", ref, "--store", str(other)), capture_output=True,
                text=True, env=cli.env, check=True).stdout)[0]["Config"]
            assert mine == theirs
        built = _umoci_config(tmp_path, cli, "portable:built")
        process = built["process"]
        assert isinstance(process, dict)
        assert process["args"] == ["/bin/echo", "from", "build"]
        assert "GREETING=hi" in process["env"] and process["cwd"] == "/srv"
        assert process["user"]["uid"] == 1000 and process["user"]["gid"] == 1000
        committed = json.loads(cli.ok("inspect", "portable:committed"))[0]["Config"]
        assert committed["Cmd"] == ["sh", "-c", "pwd"] and committed["User"] == "nobody"
        assert committed["WorkingDir"] == "/tmp" and "X=1" in committed["Env"]
        assert cli.ok("run", "--rm", "-u", "0", "portable:committed") == "/tmp\n"
        umoci = _umoci_config(tmp_path, cli, "portable:committed")
        assert umoci["process"]["args"] == ["sh", "-c", "pwd"]  # type: ignore[index]
    finally:
        cli("rm", "portable-c")
        cli("rmi", "portable:committed")
        cli("rmi", "portable:built")


def _store_snapshot(root: Path) -> tuple[object, ...]:
    tags = (root / "tags.json").read_text()
    images = sorted(os.listdir(root / "images" / "sha256"))
    containers = sorted(os.listdir(root / "containers")) if (root / "containers").exists() \
        else []
    uppers = sorted(str(p) for p in (root / "uppers").glob("*/*"))
    return tags, images, containers, uppers


@pytest.mark.parametrize(("files", "text", "where", "what"), [
    ({}, "FROM busybox\nBOGUS x\n", "Containerfile:2", "unknown instruction: BOGUS"),
    ({}, "# nothing\nRUN true\n", "Containerfile:2", "before the first FROM"),
    ({}, "ARG A=1\n", "Containerfile:1", "no FROM instruction"),
    ({}, "FROM busybox\nRUN true\nFROM no-such-image:9\n", "Containerfile:3",
     "Unable to find image 'no-such-image:9' locally; pulling it failed: refusing"),
    ({}, "FROM busybox\nCOPY ../outside /x\n", "Containerfile:2", "outside the build context"),
    ({"link": "->/etc"}, "FROM busybox\nCOPY link/passwd /x\n", "Containerfile:2",
     "outside the build context"),
    ({}, "FROM busybox\nRUN echo ok > /f\nRUN echo 'last words' && exit 3\n",
     "Containerfile:3", "RUN exited with status 3: last words"),
    ({}, 'FROM busybox\nCOPY --from=nowhere /a /b\n', "Containerfile:2", "no such stage"),
    ({}, "FROM busybox\nENV A=\"unterminated\n", "Containerfile:2", "unterminated quote"),
    ({}, "FROM busybox\nCOPY missing.txt /x\n", "Containerfile:2", "no such file"),
    ({}, "FROM busybox\nRUN --network=bridge true\n", "Containerfile:2",
     "use host or none"),
])
def test_bad_input(cli: CLI, tmp_path: Path, store_root: Path, files: dict[str, str],
                   text: str, where: str, what: str) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (tmp_path / "outside").write_text("secret\n")
    for name, content in files.items():
        if content.startswith("->"):
            (ctx / name).symlink_to(content[2:])
        else:
            (ctx / name).write_text(content)
    (ctx / "Containerfile").write_text(text)
    before = _store_snapshot(store_root)
    res = cli("build", "-t", "bad:1", str(ctx), timeout=300)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"unionfs: error: {where}: ") and what in lines[0], lines[0]
    assert _store_snapshot(store_root) == before
