"""The generator alone (no mount): same seed, same calls; calls that stay inside the tree."""

from __future__ import annotations

from tests.differential.gen import WEIGHTS, Op, generate

FILES = ["f0", "d/a", "d/b"]
DIRS = ["d", "d/sub", "empty"]


def paths_of(op: Op) -> list[str]:
    """Every path an op names (its own, and a rename's or link's target)."""
    extra = [op.args[0]] if op.name in ("rename", "link") else []
    return [op.path, *[str(p) for p in extra]]


def test_same_seed_same_calls() -> None:
    assert generate(7, 200, FILES, DIRS) == generate(7, 200, FILES, DIRS)


def test_other_seed_other_calls() -> None:
    assert generate(7, 50, FILES, DIRS) != generate(8, 50, FILES, DIRS)


def test_count_and_kinds() -> None:
    ops = generate(1, 300, FILES, DIRS)
    assert len(ops) == 300
    assert {op.name for op in ops} <= set(WEIGHTS)
    kinds = {op.name for seed in range(10) for op in generate(seed, 300, FILES, DIRS)}
    assert kinds == set(WEIGHTS)


def test_calls_stay_inside_the_mount() -> None:
    """Relative paths without "..", and symlink targets that cannot leave the tree."""
    for seed in range(20):
        for op in generate(seed, 200, FILES, DIRS):
            for path in paths_of(op):
                assert path and not path.startswith("/") and ".." not in path.split("/")
            if op.name == "symlink":
                target = str(op.args[0])
                assert not target.startswith("/") and ".." not in target.split("/")


def test_mostly_existing_paths() -> None:
    """Most calls name something that exists, or was made by an earlier call."""
    ops = generate(3, 400, FILES, DIRS)
    known = set(FILES) | set(DIRS)
    hits = 0
    for op in ops:
        hits += op.path in known
        if op.name in ("create", "mkdir", "symlink", "mkfifo"):
            known.add(op.path)
        elif op.name in ("rename", "link"):
            known.add(str(op.args[0]))
    assert hits > len(ops) // 2


def test_readable_replay_lines() -> None:
    op = Op("write", "d/a", (0, b"x" * 100, False))
    assert str(op) == "write('d/a', 0, <100 bytes b'xxxxxxxx'...>, False)"
