"""``run`` honours the image's config: Cmd, Entrypoint, Env (with -e, --env-file),
WorkingDir, User (names resolved in the image), StopSignal for ``stop``."""

from __future__ import annotations

import json
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.conftest import CLI


@pytest.fixture
def umoci_image(cli: CLI, tmp_path: Path) -> Iterator[str]:
    """busybox with a config written by umoci (the issue's example), loaded back."""
    archive = tmp_path / "busybox.tar"
    cli.ok("save", "-o", str(archive), "busybox")
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(layout, filter="data")
    index = json.loads((layout / "index.json").read_text())
    tag = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
    subprocess.run(["umoci", "config", "--image", f"{layout}:{tag}",
                    "--config.cmd", "/bin/sh", "--config.cmd", "-c", "--config.cmd",
                    "echo CMD ran $MYVAR; pwd; id -u; id -g",
                    "--config.env", "MYVAR=fromimage", "--config.workingdir", "/opt",
                    "--config.user", "1000:1000"], check=True, capture_output=True)
    cli.ok("load", "-i", str(layout), "--tag", "configured:1")
    yield "configured:1"
    cli("rmi", "configured:1")


def test_cmd_env_workdir_user_from_the_image(cli: CLI, umoci_image: str) -> None:
    assert cli.ok("run", "--rm", umoci_image) == "CMD ran fromimage\n/opt\n1000\n1000\n"
    # a command on the run line replaces Cmd; -e and -w and -u override the image's
    out = cli.ok("run", "--rm", "-e", "MYVAR=fromcli", "-w", "/tmp", "-u", "nobody",
                 umoci_image, "sh", "-c", "echo $MYVAR; pwd; id -un")
    assert out == "fromcli\n/tmp\nnobody\n"


def test_env_file(cli: CLI, umoci_image: str, tmp_path: Path) -> None:
    envfile = tmp_path / "env"
    envfile.write_text("# comment\nMYVAR=fromfile\n\nOTHER=two words\n")
    out = cli.ok("run", "--rm", "--env-file", str(envfile), umoci_image, "sh", "-c",
                 'echo "$MYVAR|$OTHER"')
    assert out == "fromfile|two words\n"
    out = cli.ok("run", "--rm", "--env-file", str(envfile), "-e", "MYVAR=cli", umoci_image,
                 "sh", "-c", "echo $MYVAR")
    assert out == "cli\n"  # -e wins over --env-file
    res = cli("run", "--rm", "--env-file", str(tmp_path / "missing"), umoci_image)
    assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1


def test_entrypoint_and_cmd_combine_as_docker(cli: CLI) -> None:
    cli.ok("run", "--name", "ep-src", "busybox", "true")
    try:
        cli.ok("commit", "ep-src", "ep:1", "--change", 'ENTRYPOINT ["echo", "entrypoint"]',
               "--change", 'CMD ["default"]')
        assert cli.ok("run", "--rm", "ep:1") == "entrypoint default\n"
        assert cli.ok("run", "--rm", "ep:1", "hello") == "entrypoint hello\n"
        assert cli.ok("run", "--rm", "--entrypoint", "echo", "ep:1") == "\n"  # Cmd dropped
        assert cli.ok("run", "--rm", "--entrypoint", "echo", "ep:1", "x") == "x\n"
    finally:
        cli("rm", "ep-src")
        cli("rmi", "ep:1")


def test_user_name_resolved_in_the_image(cli: CLI) -> None:
    cli.ok("run", "--name", "user-src", "busybox", "true")
    try:
        cli.ok("commit", "user-src", "named:1", "--change", "USER user:nogroup")
        assert cli.ok("run", "--rm", "named:1", "sh", "-c", "id -u; id -g; echo $HOME") == \
            "1000\n65534\n/home/user\n"
        cli.ok("commit", "user-src", "named:2", "--change", "USER ghost")
        res = cli("run", "--rm", "named:2", "true")
        assert res.returncode != 0 and "unable to find user ghost" in res.stderr
    finally:
        cli("rm", "user-src")
        cli("rmi", "named:1")
        cli("rmi", "named:2")


def test_stop_sends_the_images_stop_signal(cli: CLI) -> None:
    cli.ok("run", "--name", "sig-src", "busybox", "true")
    try:
        cli.ok("commit", "sig-src", "sig:1", "--change", "STOPSIGNAL SIGUSR1", "--change",
               """CMD ["sh", "-c", "trap 'echo got usr1; exit 7' USR1; echo ready; """
               """while true; do sleep 0.1; done"]""")
        cli.ok("run", "-d", "--name", "sig-run", "sig:1")
        cli.ok("stop", "-t", "30", "sig-run")
        info = json.loads(cli.ok("inspect", "sig-run"))[0]
        assert info["State"]["ExitCode"] == 7  # the trap ran: SIGUSR1, not SIGTERM/SIGKILL
        assert "got usr1" in cli.ok("logs", "sig-run")
    finally:
        cli("rm", "-f", "sig-run")
        cli("rm", "sig-src")
        cli("rmi", "sig:1")


def test_exec_and_start_use_the_image_config(cli: CLI, umoci_image: str) -> None:
    cli.ok("run", "-d", "--name", "cfg-run", umoci_image, "sleep", "600")
    try:  # exec runs as the image's user, in its working dir, with its env (docker)
        assert cli.ok("exec", "cfg-run", "sh", "-c", "echo $MYVAR; pwd; id -u") == \
            "fromimage\n/opt\n1000\n"
        assert cli.ok("exec", "-u", "0", "-w", "/", "cfg-run", "sh", "-c", "pwd; id -u") == \
            "/\n0\n"
    finally:
        cli("rm", "-f", "cfg-run")
    cli.ok("run", "--name", "cfg-start", umoci_image)
    try:  # start runs the image's Cmd again, as the image's user
        cli.ok("start", "cfg-start")
        assert cli.ok("wait", "cfg-start").strip() == "0"
        assert cli.ok("logs", "cfg-start") == "CMD ran fromimage\n/opt\n1000\n1000\n" * 2
    finally:
        cli("rm", "-f", "cfg-start")
