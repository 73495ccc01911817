"""The pure parts of the container commands: docker's words for times and sizes, the table
alignment, filters, templates, ps output parsing and cp's argument split."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from unionfs.core.template import render
from unionfs.errors import UserError
from unionfs.runtime import ps_format
from unionfs.runtime.cp import split_arg
from unionfs.runtime.prune import human_size
from unionfs.runtime.top import parse_ps


@pytest.mark.parametrize(("seconds", "words"), [
    (0.4, "Less than a second"), (1, "1 second"), (59, "59 seconds"), (60, "About a minute"),
    (119, "About a minute"), (120, "2 minutes"), (3599, "59 minutes"),
    (3600, "About an hour"), (5400, "2 hours"), (47 * 3600, "47 hours"),
    (48 * 3600, "2 days"), (13 * 86400, "13 days"), (14 * 86400, "2 weeks"),
    (60 * 86400, "2 months"), (800 * 86400, "2 years"),
])
def test_human_duration_as_docker(seconds: float, words: str) -> None:
    assert ps_format.human_duration(seconds) == words


def test_status_words() -> None:
    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    ago = (now - timedelta(seconds=5)).isoformat()
    assert ps_format.status_text({"status": "running", "started_at": ago}, False, now) == (
        "Up 5 seconds")
    assert ps_format.status_text({"status": "running", "started_at": ago}, True, now) == (
        "Up 5 seconds (Paused)")
    assert ps_format.status_text({"status": "exited", "exit_code": 0, "finished_at": ago},
                                 False, now) == "Exited (0) 5 seconds ago"
    assert ps_format.status_text({"status": "created"}, False, now) == "Created"
    assert ps_format.state_word({"status": "running"}, True) == "paused"


def test_align_is_docker_tabwriter() -> None:
    assert ps_format.align(["A\tBB\tC", "long-cell-x\tb\tc"]) == [
        "A             BB        C", "long-cell-x   b         c"]


def test_filters_are_checked() -> None:
    assert ps_format.parse_filters(["status=exited", "status=created", "label=a=b"]) == {
        "status": ["exited", "created"], "label": ["a=b"]}
    for bad in ("status=sleepy", "nope=1", "status", "exited=x"):
        with pytest.raises(UserError):
            ps_format.parse_filters([bad])


def test_templates_tables_and_json() -> None:
    row = {"ID": "abc", "Names": "web", "Label": lambda key: {"k": "v"}.get(key, "")}
    assert render('{{.Names}} {{.Label "k"}}', row) == "web v"
    assert render("{{json .}}", row) == '{"ID":"abc","Names":"web"}'
    lines = ps_format.format_rows([row], "table {{.ID}}\\t{{.Names}}", quiet=False)
    assert lines == ["CONTAINER ID   NAMES", "abc            web"]
    assert ps_format.format_rows([row], "{{.Names}}", quiet=True) == ["abc"]


def test_ps_output_keeps_the_command_whole() -> None:
    out = ("UID PID PPID C STIME TTY TIME CMD\n"
           "root 10 1 0 10:00 ? 00:00:00 sleep 1000 --x\n"
           "root 11 1 0 10:00 ? 00:00:00 other\n")
    titles, rows = parse_ps(out, {10})
    assert titles[1] == "PID" and rows == [["root", "10", "1", "0", "10:00", "?", "00:00:00",
                                           "sleep 1000 --x"]]


def test_sizes_as_docker() -> None:
    assert [human_size(n) for n in (0, 212, 5000, 1234567, 10**10)] == [
        "0B", "212B", "5kB", "1.235MB", "10GB"]


def test_cp_arguments_split_as_docker() -> None:
    assert split_arg("web:/etc/hosts") == ("web", "/etc/hosts")
    assert split_arg("/abs:path") == (None, "/abs:path")
    assert split_arg("./rel:x") == (None, "./rel:x")
    assert split_arg("file") == (None, "file")
    assert split_arg("-") == (None, "-")
    assert split_arg("web:") == ("web", "/")
