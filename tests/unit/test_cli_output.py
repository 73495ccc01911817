"""The CLI's last words: paths shown as text, quiet end in a closed pipe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from unionfs.cli import _describe_oserror


def test_a_bytes_path_is_shown_as_text() -> None:
    exc = FileNotFoundError(2, "No such file or directory", b"/store/layers/x/fs")
    assert _describe_oserror(exc) == "No such file or directory: /store/layers/x/fs"
    exc2 = OSError(18, "Invalid cross-device link", b"/a", None, "/b")
    assert _describe_oserror(exc2) == "Invalid cross-device link: /a: /b"


def test_a_closed_pipe_ends_the_cli_quietly(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read: the first write fails with EPIPE
    proc = subprocess.run([sys.executable, "-m", "unionfs", "ps", "-a"], stdout=write_end,
                          stderr=subprocess.PIPE, text=True,
                          env=dict(os.environ, UNIONFS_STORE=str(tmp_path / "store")))
    os.close(write_end)
    assert proc.returncode == 141
    assert proc.stderr == ""
