"""A command loads only its own family's module, and the map that says so is complete."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

from unionfs.cli import COMMAND_FAMILY, COMMAND_MODULES, ArgumentParser, build_parser


def _registered(module: str) -> set[str]:
    parser = ArgumentParser(prog="unionfs")
    sub = parser.add_subparsers(dest="command", parser_class=ArgumentParser)
    importlib.import_module(module).register(sub)
    return set(sub.choices)


def test_every_command_is_mapped_to_the_module_that_registers_it() -> None:
    want = {cmd: module for module in COMMAND_MODULES for cmd in _registered(module)}
    assert want == COMMAND_FAMILY


def test_a_known_command_parses_as_with_every_family() -> None:
    argv = ["commit", "--upper", "/u", "app:1", "-m", "msg"]
    one = vars(build_parser("commit").parse_args(argv))
    every = vars(build_parser().parse_args(argv))
    assert one.pop("func") is every.pop("func")
    assert one == every


# (a rootless user's store command checks the runtime's user-namespace state first)
PROBE = """
import os, sys
from unionfs.cli import main
main(["images", "-q"])
heavy = ("unionfs.api", "unionfs.mount", "unionfs.build", "httpx")
heavy += ("unionfs.runtime",) if os.geteuid() == 0 else ()
print(sorted(m for m in sys.modules if m.startswith(heavy)))
"""


def test_a_store_command_imports_neither_the_runtime_nor_the_mount_api(tmp_path: Path
                                                                       ) -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         env={**os.environ, "UNIONFS_STORE": str(tmp_path / "store")})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
