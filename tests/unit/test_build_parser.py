"""The pure parts of the build: Containerfile parser, word expansion, .dockerignore, config
instructions and ``commit --change``, the inspect template."""

from __future__ import annotations

from pathlib import Path

import pytest

from unionfs.build import words
from unionfs.build.context import Ignore, expand_sources
from unionfs.build.instructions import apply_changes, apply_config
from unionfs.build.parser import BuildError, parse
from unionfs.cli.template import render
from unionfs.errors import UserError
from unionfs.store.imageconfig import ContainerConfig


def test_continuations_comments_and_lines() -> None:
    text = ("# comment\n\nFROM busybox AS base\nRUN echo a \\\n# inside\n    && echo b\n"
            "copy --chown=1:2 a b /dst/\n")
    ins = parse(text).instructions
    assert [(i.keyword, i.line) for i in ins] == [("FROM", 3), ("RUN", 4), ("COPY", 7)]
    assert ins[1].args == "echo a     && echo b"
    assert ins[1].exec_form is None
    assert ins[2].flags == {"chown": "1:2"} and ins[2].args == "a b /dst/"


def test_exec_form_and_invalid_json_is_shell_form() -> None:
    ins = parse('CMD ["nginx", "-g", "daemon off;"]\nCMD [not json\n').instructions
    assert ins[0].exec_form == ["nginx", "-g", "daemon off;"]
    assert ins[1].exec_form is None and ins[1].args == "[not json"


def test_escape_directive() -> None:
    parsed = parse("# escape=`\nFROM busybox\nRUN dir c:\\ `\n  && echo x\n")
    assert parsed.escape == "`"
    assert parsed.instructions[1].args == "dir c:\\   && echo x"
    # after the first instruction a directive is a comment
    assert len(parse("FROM a\n# escape=`\nRUN x\n").instructions) == 2


@pytest.mark.parametrize(("text", "where", "what"), [
    ("FROM busybox\nFOO bar\n", "Dockerfile:2", "unknown instruction: FOO"),
    ("FROM busybox\nRUN --mount=type=cache x\n", "Dockerfile:2", "unknown flag: --mount"),
    ("FROM busybox\n\nCOPY --from x y\n", "Dockerfile:3", "needs a value"),
    ("FROM busybox\nWORKDIR\n", "Dockerfile:2", "requires at least one argument"),
    ("# escape=x\nFROM a\n", "Dockerfile:1", "invalid escape token"),
    ("FROM a\nRUN <<EOF\necho hi\nEOF\n", "Dockerfile:2", "heredocs (RUN <<WORD)"),
    ("FROM a\nRUN cat <<-'END' > /x\nhi\nEND\n", "Dockerfile:2", "heredocs"),
    ("FROM a\nCOPY <<EOF /x\nhi\nEOF\n", "Dockerfile:2", "heredocs (COPY <<WORD)"),
])
def test_syntax_errors_name_file_and_line(text: str, where: str, what: str) -> None:
    with pytest.raises(BuildError) as exc:
        parse(text, "Dockerfile")
    assert str(exc.value).startswith(where + ": ") and what in str(exc.value)


def test_shift_operators_are_no_heredoc() -> None:
    runs = parse('FROM a\nRUN echo $((1<<4)) && python3 -c "print(2<<x)"\n').instructions
    assert runs[1].args.startswith("echo $((1<<4))")


def test_expansion() -> None:
    env = {"A": "x", "E": ""}
    assert words.expand("$A-${A}-${B:-d}-${A:+alt}-${E:-e}-${E-f}", env) == "x-x-d-alt-e-"
    assert words.expand(r"'$A' \$A", env) == "$A $A"
    assert words.split('a "b c" $A', env) == ["a", "b c", "x"]
    assert words.key_values('K=1 L="two words"', env, "\\", "ENV") == [("K", "1"),
                                                                      ("L", "two words")]
    assert words.key_values("K old style $A", env, "\\", "ENV") == [("K", "old style x")]
    with pytest.raises(UserError):
        words.expand('"open', env)


def test_dockerignore() -> None:
    ig = Ignore(["# c", "*.log", "build/", "!keep.log", "**/tmp", "secret?"])
    assert ig.excluded("a.log") and not ig.excluded("keep.log")
    assert ig.excluded("build/x/y") and ig.excluded("a/b/tmp/z") and ig.excluded("secret1")
    assert not ig.excluded("src/a.log")  # '*' does not cross '/'
    assert not ig.excluded("main.c")


def test_copy_glob_stays_in_one_directory(tmp_path: Path) -> None:
    for rel in ("a.txt", "b.txt", "c.md", "skip.txt", "sub/d.txt"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).touch()

    def names(*patterns: str) -> list[str]:
        found = expand_sources(tmp_path, list(patterns), Ignore(["skip.txt"]), "COPY")
        return [name for _, name in found]

    assert names("*.txt") == ["a.txt", "b.txt"]  # not sub/d.txt: '*' does not cross '/'
    assert names("sub/*.txt", "?.md") == ["d.txt", "c.md"]
    assert names("**/*.txt") == ["a.txt", "b.txt", "d.txt"]
    assert names("[!a].txt") == ["b.txt"]
    with pytest.raises(UserError, match="no source files"):
        names("*.none")


def test_config_instructions() -> None:
    cfg = ContainerConfig(cmd=["base"])
    for line in ("ENV A=1 B=two", "WORKDIR /opt", "WORKDIR app", "USER nobody",
                 "EXPOSE 80 53/udp", "LABEL a=b", "VOLUME /data", 'SHELL ["/bin/ash", "-c"]',
                 "STOPSIGNAL quit", "CMD echo $A"):
        ins = parse(line).instructions[0]
        cfg = apply_config(ins, cfg, cfg.env_dict())
    assert cfg.env == ["A=1", "B=two"] and cfg.working_dir == "/opt/app"
    assert cfg.user == "nobody" and cfg.exposed_ports == ["53/udp", "80/tcp"]
    assert cfg.labels == {"a": "b"} and cfg.volumes == ["/data"]
    assert cfg.stop_signal == "SIGQUIT" and cfg.cmd == ["/bin/ash", "-c", "echo $A"]
    ep = apply_config(parse('ENTRYPOINT ["ep"]').instructions[0], cfg, {}, cmd_inherited=True)
    assert ep.entrypoint == ["ep"] and ep.cmd is None  # docker resets an inherited CMD
    oci = cfg.to_oci()
    assert oci["ExposedPorts"] == {"53/udp": {}, "80/tcp": {}} and oci["WorkingDir"] == "/opt/app"
    assert ContainerConfig.from_oci(oci) == cfg


def test_commit_changes() -> None:
    cfg = apply_changes(ContainerConfig(env=["X=1"]),
                        ['CMD ["nginx","-g","daemon off;"]', "ENV Y=$X", "EXPOSE 80"])
    assert cfg.cmd == ["nginx", "-g", "daemon off;"] and cfg.env == ["X=1", "Y=1"]
    for bad in ("RUN true", "FOO x", "EXPOSE 99999", "STOPSIGNAL NOPE"):
        with pytest.raises(UserError):
            apply_changes(ContainerConfig(), [bad])


def test_template() -> None:
    data = {"Config": {"Cmd": ["/bin/sh", "-c", "x"], "Env": ["A=1"], "Labels": {"k": "v"}}}
    assert render("{{.Config.Cmd}}", data) == "[/bin/sh -c x]"
    assert render("{{json .Config.Env}} {{.Config.Labels}}", data) == '["A=1"] map[k:v]'
    assert render("{{.Config.User}}", data) == "<no value>"
    with pytest.raises(UserError):
        render("{{range .Config.Env}}", data)
