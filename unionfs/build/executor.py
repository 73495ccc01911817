"""``unionfs build``: a Containerfile's stages, step by step, with the build cache.

Order: read and parse the file (syntax errors first), split it into stages, check every
``FROM`` names ``scratch``, an earlier stage or an image in the store (before anything runs),
then run each stage's steps. A step that changes files (RUN, COPY, ADD) makes a layer; the
others change the config. Each step's result is cached under a key of its parent config,
text, build args in scope and copied files. Only the final image is tagged; a failure leaves
the tags and images as they were (cached layers of the steps that succeeded stay).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from unionfs.build import copy, instructions, words
from unionfs.build.cache import BuildCache, config_digest, step_key
from unionfs.build.context import Ignore, digest, expand_sources, walk
from unionfs.build.parser import BuildError, Containerfile, Instruction, parse
from unionfs.build.workspace import Base, check_volumes, run, working_tree
from unionfs.errors import UserError
from unionfs.store import Image, Layer, Store, refs
from unionfs.store.fsutil import now_iso
from unionfs.store.imageconfig import ContainerConfig, with_config
from unionfs.store.registry import ensure_image

DEFAULT_FILES = ("Containerfile", "Dockerfile")


@dataclass
class BuildOptions:
    """What ``unionfs build`` was asked."""

    context: Path
    file: Path | None = None
    tag: str | None = None
    build_args: dict[str, str] = field(default_factory=dict)
    no_cache: bool = False
    target: str | None = None
    network: str = "host"
    volumes: list[str] = field(default_factory=list)  # HOST:CTR[:ro] bound into RUN steps


@dataclass
class Stage:
    """One ``FROM`` and the instructions up to the next."""

    index: int
    name: str | None
    base: str
    start: Instruction
    steps: list[Instruction]


@dataclass
class State:
    """A stage being built: its image config so far, ARGs in scope, the Cmd's origin."""

    config: dict[str, Any]
    base_id: str
    args: dict[str, str] = field(default_factory=dict)
    cmd_inherited: bool = True

    @property
    def cc(self) -> ContainerConfig:
        return ContainerConfig.from_image(self.config)

    def variables(self) -> dict[str, str]:
        """What ``$NAME`` expands to: ARGs, overridden by ENV (docker's rule)."""
        return {**self.args, **self.cc.env_dict()}

    def base(self, store: Store) -> Base:
        diff_ids = self.config["rootfs"]["diff_ids"]
        return Base(config_digest(self.config), [Layer(store, d).dir for d in reversed(diff_ids)])


class Builder:
    """Runs one build and prints its steps to ``out``."""

    def __init__(self, store: Store, opts: BuildOptions, out: TextIO) -> None:
        self.store, self.opts, self.out = store, opts, out
        self.cache = BuildCache(store)
        self.context = opts.context.resolve()
        self.ignore = Ignore.load(self.context)
        self.results: dict[str, dict[str, Any]] = {}  # stage name/index -> final config
        self.step_no = 0
        self.total = 0

    # -- the whole build -------------------------------------------------------------------

    def build(self) -> Image:
        tag = refs.normalize_tag(self.opts.tag) if self.opts.tag else None  # before any work
        path = self._file()
        name = path.name if path.parent == self.context else str(path)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read {path}: {exc}") from None
        parsed = parse(text, name)
        global_args, stages = self._stages(parsed, name)
        stages = self._up_to_target(stages)
        self._check_bases(stages, global_args, parsed.escape)
        check_volumes(self.opts.volumes)
        self.total = sum(1 + len(s.steps) for s in stages)
        config: dict[str, Any] = {}
        for stage in stages:
            config = self._run_stage(stage, global_args, parsed.escape)
            self.results[str(stage.index)] = config
            if stage.name:
                self.results[stage.name] = config
        image = self.store.publish_image(config, tag)
        self._say(f"COMMIT {tag or ''}".rstrip())
        if tag:
            self._say(f"Successfully tagged {tag}")
        self._say(image.id)
        return image

    def _file(self) -> Path:
        if not self.context.is_dir():
            raise UserError(f"build context {self.opts.context} is not a directory")
        if self.opts.file is not None:
            path = self.opts.file if self.opts.file.is_absolute() else Path.cwd() / self.opts.file
            if not path.is_file():
                raise UserError(f"no such file: {self.opts.file}")
            return path
        for candidate in DEFAULT_FILES:
            if (self.context / candidate).is_file():
                return self.context / candidate
        raise UserError(f"no Containerfile or Dockerfile in {self.opts.context}")

    def _stages(self, parsed: Containerfile, name: str
                ) -> tuple[list[Instruction], list[Stage]]:
        global_args: list[Instruction] = []
        stages: list[Stage] = []
        for ins in parsed.instructions:
            if ins.keyword == "FROM":
                base, _, alias = _from_parts(ins)
                stages.append(Stage(len(stages), alias, base, ins, []))
            elif not stages:
                if ins.keyword != "ARG":
                    raise ins.error(f"{ins.keyword} before the first FROM (a Containerfile "
                                    "must start with FROM)")
                global_args.append(ins)
            else:
                stages[-1].steps.append(ins)
        if not stages:
            raise BuildError(f"{name}:1", "no FROM instruction")
        return global_args, stages

    def _up_to_target(self, stages: list[Stage]) -> list[Stage]:
        if self.opts.target is None:
            return stages
        for i, stage in enumerate(stages):
            if stage.name == self.opts.target:
                return stages[: i + 1]
        raise UserError(f"target stage {self.opts.target!r} could not be found")

    def _check_bases(self, stages: list[Stage], global_args: list[Instruction],
                     escape: str) -> None:
        """Every FROM and COPY --from names something that exists (an image the store lacks
        is pulled, as docker does), before anything runs."""
        known: set[str] = set()
        variables = self._global_variables(global_args, escape)
        for stage in stages:
            base = words.expand(stage.base, variables, escape)
            if base != "scratch" and base not in known:
                try:
                    ensure_image(self.store, base)
                except UserError as exc:
                    raise stage.start.error(str(exc)) from None
            for ins in stage.steps:
                src = ins.flags.get("from")
                if ins.keyword == "COPY" and src is not None and src not in known and not (
                        src.isdigit() and int(src) < stage.index):
                    try:
                        ensure_image(self.store, src)
                    except UserError as exc:
                        raise ins.error(f"COPY --from={src}: no such stage; {exc}") from None
            known.add(str(stage.index))
            if stage.name:
                known.add(stage.name)

    def _global_variables(self, global_args: list[Instruction], escape: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for ins in global_args:
            out.update(self._declare(ins, out, escape))
        return out

    # -- one stage ---------------------------------------------------------------------------

    def _run_stage(self, stage: Stage, global_args: list[Instruction], escape: str
                   ) -> dict[str, Any]:
        gvars = self._global_variables(global_args, escape)
        base = words.expand(stage.base, gvars, escape)
        state = self._from(base)
        self._step(stage.start, lambda: None)
        for ins in stage.steps:
            if ins.keyword == "ARG":
                self._step(ins, lambda: None)
                state.args.update(self._declare(ins, {**gvars, **state.variables()}, escape,
                                                inherit=gvars))
                continue
            self._cached_step(ins, state, escape)
        return state.config

    def _from(self, base: str) -> State:
        if base == "scratch":
            empty = {"architecture": refs.oci_arch(), "os": "linux", "config": {},
                     "rootfs": {"type": "layers", "diff_ids": []}, "history": []}
            return State(empty, "scratch")
        if base in self.results:
            cfg = self.results[base]
            return State(dict(cfg), config_digest(cfg))
        image = ensure_image(self.store, base)  # pulls an image it does not have
        return State(dict(image.config), image.id)

    def _declare(self, ins: Instruction, variables: dict[str, str], escape: str, *,
                 inherit: dict[str, str] | None = None) -> dict[str, str]:
        """The values of the ARGs ``ins`` declares: --build-arg, else its default, else (in a
        stage) the global ARG's value."""
        out: dict[str, str] = {}
        for word in words.split(ins.args, variables, escape):
            name, sep, default = word.partition("=")
            if not name:
                raise ins.error(f"invalid ARG {ins.args!r}")
            if name in self.opts.build_args:
                out[name] = self.opts.build_args[name]
            elif sep:
                out[name] = default
            elif inherit and name in inherit:
                out[name] = inherit[name]
        return out

    def _cached_step(self, ins: Instruction, state: State, escape: str) -> None:
        scope = "\0".join(f"{k}={v}" for k, v in sorted(state.args.items()))
        parts = [ins.text, scope]
        if ins.keyword in ("COPY", "ADD"):
            parts.append(self._copy_inputs(ins, state, escape))
        key = step_key(state.config, *parts)
        cached = None if self.opts.no_cache else self.cache.get(key)
        if cached is not None:
            self._say(f"STEP {self._next()}/{self.total}: {ins.text}")
            self._say(f"--> Using cache {config_digest(cached).removeprefix('sha256:')[:12]}")
            state.config = cached
        else:
            self._step(ins, lambda: self._execute(ins, state, escape))
            self.cache.put(key, state.config)
        if ins.keyword == "CMD":
            state.cmd_inherited = False

    def _step(self, ins: Instruction, body: Callable[[], None]) -> None:
        self._say(f"STEP {self._next()}/{self.total}: {ins.text}")
        started = time.monotonic()
        body()
        if ins.keyword not in ("FROM", "ARG"):
            self._say(f"--> {time.monotonic() - started:.2f}s")

    def _next(self) -> int:
        self.step_no += 1
        return self.step_no

    def _say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    # -- executing one instruction -----------------------------------------------------------

    def _execute(self, ins: Instruction, state: State, escape: str) -> None:
        if ins.keyword in instructions.CONFIG_ONLY:
            cc = instructions.apply_config(ins, state.cc, state.variables(), escape,
                                           cmd_inherited=state.cmd_inherited)
            state.config = _with_history(with_config(state.config, cc), ins.text, None)
        elif ins.keyword == "MAINTAINER":
            state.config = _with_history(dict(state.config, author=ins.args), ins.text, None)
        elif ins.keyword == "RUN":
            self._run(ins, state)
        else:
            self._copy(ins, state, escape)

    def _run(self, ins: Instruction, state: State) -> None:
        cc = state.cc
        argv = instructions.command_of(ins, cc)
        env = [*cc.env, *(f"{k}={v}" for k, v in sorted(state.args.items())
                          if k not in cc.env_dict())]
        network = ins.flags.get("network", self.opts.network)
        if network not in ("host", "none", "default"):
            raise ins.error(f"RUN --network={network}: use host or none")
        result = run(self.store, state.base(self.store), argv, env=env,
                     workdir=cc.working_dir, user=cc.user,
                     network="host" if network == "default" else network, out=self.out,
                     volumes=self.opts.volumes)
        if result.layer is None:
            last = f": {result.last_line}" if result.last_line else ""
            raise ins.error(f"RUN exited with status {result.code}{last}")
        shown = "RUN " + (" ".join(argv) if ins.exec_form is None else ins.args)
        if state.args:
            shown = f"|{len(state.args)} " + " ".join(
                f"{k}={v}" for k, v in sorted(state.args.items())) + " " + shown
        state.config = _with_history(state.config, shown, result.layer.id)

    def _copy_sources(self, ins: Instruction, state: State, escape: str
                      ) -> tuple[Path, Ignore | None, list[tuple[Path, str]], str]:
        """(source root, ignore rules, sources, destination) of a COPY or ADD."""
        if ins.exec_form is not None:
            items = [words.expand(w, state.variables(), escape) for w in ins.exec_form]
        else:
            items = words.split(ins.args, state.variables(), escape)
        if len(items) < 2:
            raise ins.error(f"{ins.keyword} requires at least two arguments: SRC... DEST")
        *srcs, dest = items
        root: Path = self.context
        ignore: Ignore | None = self.ignore
        if "from" in ins.flags:
            root, ignore = Path("/"), None  # replaced by the stage's tree in _copy
        if ins.keyword == "ADD" and any("://" in s for s in srcs):
            raise ins.error("ADD from a URL is not supported (no network during builds)")
        sources = [] if "from" in ins.flags else self._expand(ins, root, srcs, ignore)
        return root, ignore, sources, dest

    def _expand(self, ins: Instruction, root: Path, srcs: list[str], ignore: Ignore | None
                ) -> list[tuple[Path, str]]:
        try:
            return expand_sources(root, srcs, ignore, ins.keyword)
        except UserError as exc:
            raise ins.error(str(exc)) from None

    def _copy_inputs(self, ins: Instruction, state: State, escape: str) -> str:
        """What the cache key of a COPY/ADD includes: the digest of its source files."""
        _, ignore, sources, _ = self._copy_sources(ins, state, escape)
        if "from" in ins.flags:
            return "from " + self._from_digest(ins.flags["from"])
        entries = [e for src, _ in sources for e in walk(src, self.context, ignore)]
        return digest(entries)

    def _from_digest(self, name: str) -> str:
        if name in self.results:
            return config_digest(self.results[name])
        return ensure_image(self.store, name).id  # pulled by _check_bases if it was missing

    def _copy(self, ins: Instruction, state: State, escape: str) -> None:
        _, ignore, sources, dest = self._copy_sources(ins, state, escape)
        cc = state.cc
        if not dest.startswith("/"):
            dest = os.path.join(cc.working_dir or "/", dest) + ("/" if dest.endswith("/")
                                                                else "")
        mode = _mode(ins)
        with working_tree(self.store, state.base(self.store)) as (root, made):
            try:
                owner = copy.resolve_owner(str(root), ins.flags["chown"]) \
                    if "chown" in ins.flags else None
                if "from" in ins.flags:
                    self._copy_from(ins, str(root), dest, owner, mode, escape, state)
                else:
                    copy.copy_sources(str(root), sources, dest, context=self.context,
                                      ignore=ignore, owner=owner, mode=mode,
                                      unpack=ins.keyword == "ADD")
            except UserError as exc:
                raise ins.error(str(exc)) from None
            except OSError as exc:
                raise ins.error(f"{ins.keyword} failed: {exc.strerror}: {exc.filename}"
                                ) from None
        state.config = _with_history(state.config, ins.text, made[0].id)

    def _copy_from(self, ins: Instruction, root: str, dest: str, owner: copy.Owner | None,
                   mode: int | None, escape: str, state: State) -> None:
        """COPY --from: the sources are read from the other stage's (or image's) tree."""
        name = ins.flags["from"]
        config = self.results.get(name) or ensure_image(self.store, name).config
        other = State(config, config_digest(config))
        with working_tree(self.store, other.base(self.store)) as (src_root, _):
            items = words.split(ins.args, state.variables(), escape) \
                if ins.exec_form is None else list(ins.exec_form)
            sources = expand_sources(Path(src_root), items[:-1], None, "COPY --from")
            copy.copy_sources(root, sources, dest, context=Path(src_root), ignore=None,
                              owner=owner, mode=mode, unpack=False)


def _from_parts(ins: Instruction) -> tuple[str, str, str | None]:
    parts = ins.args.split()
    if len(parts) == 1:
        return parts[0], "", None
    if len(parts) == 3 and parts[1].lower() == "as":
        return parts[0], "as", parts[2]
    raise ins.error("FROM expects IMAGE [AS NAME]")


def _mode(ins: Instruction) -> int | None:
    text = ins.flags.get("chmod")
    if text is None:
        return None
    try:
        value = int(text, 8)
    except ValueError:
        raise ins.error(f"invalid --chmod={text}: expected an octal mode") from None
    if not 0 <= value <= 0o7777:
        raise ins.error(f"invalid --chmod={text}")
    return value


def _with_history(config: dict[str, Any], created_by: str, layer: str | None
                  ) -> dict[str, Any]:
    """``config`` with one more history record (and layer, unless config-only)."""
    out = dict(config)
    created = now_iso()
    entry = refs.history_entry(created, created_by, "", None)
    if layer is None:
        entry["empty_layer"] = True
    else:
        out["rootfs"] = {"type": "layers", "diff_ids": [*out["rootfs"]["diff_ids"], layer]}
    out["history"] = [*out.get("history", []), entry]
    out["created"] = created
    return out


def build(store: Store, opts: BuildOptions, out: TextIO) -> Image:
    """Build the Containerfile of ``opts``; the new image."""
    return Builder(store, opts, out).build()
