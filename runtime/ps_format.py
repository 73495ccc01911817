"""``ps`` as docker prints it: newest first, relative times, ``-n``/``-l``, ``--filter``,
``--format`` (the Go-template subset of ``inspect -f``, ``table ...``, ``json``) and ``-q``.

Each container becomes one row of docker's fields (``ID``, ``Image``, ``Command``,
``CreatedAt``, ``RunningFor``, ``Ports``, ``State``, ``Status``, ``Size``, ``Names``,
``Labels``, ``Mounts``, ``Networks``, ``LocalVolumes``, and the method ``Label "key"``).
Filters combine as docker's do: values of one key are alternatives (``status=exited
--filter status=created``), different keys must all match, and every ``label`` must match.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from unionfs.core.template import render
from unionfs.errors import UserError
from unionfs.runtime import pause, state

DEFAULT_TABLE = ("table {{.ID}}\\t{{.Image}}\\t{{.Command}}\\t{{.RunningFor}}\\t{{.Status}}"
                 "\\t{{.Ports}}\\t{{.Names}}")
HEADERS = {
    "ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
    "RunningFor": "CREATED", "Ports": "PORTS", "State": "STATE", "Status": "STATUS",
    "Size": "SIZE", "Names": "NAMES", "Labels": "LABELS", "Mounts": "MOUNTS",
    "Networks": "NETWORKS", "LocalVolumes": "LOCAL VOLUMES",
}
STATES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")
FILTER_KEYS = ("id", "name", "label", "status", "exited", "ancestor", "before", "since",
               "network")


# -- docker's words for times ------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """A duration as docker words it (go-units ``HumanDuration``)."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{s // 3600 // 24 // 365} years"


def _parse(iso: str | None) -> datetime | None:
    if not iso:
        return None
    try:
        then = datetime.fromisoformat(iso)
    except ValueError:
        return None
    return then if then.tzinfo else then.replace(tzinfo=UTC)


def since(iso: str | None, now: datetime) -> str:
    """How long ago ``iso`` was, in docker's words ("" when unknown)."""
    then = _parse(iso)
    return human_duration((now - then).total_seconds()) if then else ""


def state_word(st: dict[str, Any], paused: bool) -> str:
    """docker's ``.State``: created, running, paused or exited."""
    status = st.get("status") or "created"
    if status == "running":
        return "paused" if paused else "running"
    return "exited" if status == "exited" else "created"


def status_text(st: dict[str, Any], paused: bool, now: datetime) -> str:
    """docker's ``.Status``: "Up 3 seconds", "Up 2 minutes (Paused)", "Exited (0) 5 seconds
    ago", "Created"; a recorded error follows in parentheses."""
    status = st.get("status")
    if status == "running":
        text = f"Up {since(st.get('started_at'), now)}"
        return f"{text} (Paused)" if paused else text
    if status == "exited":
        ago = since(st.get("finished_at"), now)
        text = f"Exited ({st.get('exit_code')})" + (f" {ago} ago" if ago else "")
        return f"{text} (Error: {st['error']})" if st.get("error") else text
    return "Created"


# -- rows -----------------------------------------------------------------------------------


def _command(argv: list[str], trunc: bool) -> str:
    text = " ".join(argv)
    if trunc and len(text) > 20:
        text = text[:19] + "…"
    return json.dumps(text, ensure_ascii=False)


def _go_time(when: datetime | None) -> str:
    """A time as Go's ``Time.String`` prints it in UTC."""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC") if when else ""


def row(c: state.Container, labels: dict[str, str], now: datetime, *, trunc: bool = True
        ) -> dict[str, Any]:
    """docker's ps fields of container ``c``."""
    st = c.state()
    paused = pause.is_paused(c, st)
    spec = None if c.broken else c.spec
    mounts = [v.host for v in spec.volumes] if spec else []
    created = _parse(c.config.get("created"))
    return {
        "ID": c.id[:12] if trunc else c.id,
        "Image": c.config.get("image", ""),
        "Command": _command(spec.argv(), trunc) if spec else '""',
        "CreatedAt": _go_time(created),
        "RunningFor": f"{since(c.config.get('created'), now)} ago" if created else "",
        "Ports": ", ".join(p.show() for p in spec.ports) if spec else "",
        "State": state_word(st, paused),
        "Status": status_text(st, paused, now),
        "Size": "0B",
        "Names": c.name,
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        "Mounts": ",".join(mounts),
        "Networks": spec.network if spec else "",
        "LocalVolumes": "0",
        "Label": lambda key: labels.get(key, ""),
    }


# -- filters --------------------------------------------------------------------------------


def parse_filters(texts: Iterable[str]) -> dict[str, list[str]]:
    """``key=value`` options as a dict of lists; a one-line error for a bad one."""
    found: dict[str, list[str]] = {}
    for text in texts:
        key, eq, value = text.partition("=")
        key = key.strip().lower()
        if not eq:
            raise UserError(f"bad format of filter (expected name=value): {text}")
        if key not in FILTER_KEYS:
            raise UserError(f"invalid filter '{key}'")
        if key == "status" and value not in STATES:
            raise UserError(f"invalid filter 'status={value}'")
        if key == "exited" and not value.lstrip("-").isdigit():
            raise UserError(f"invalid filter 'exited={value}'")
        found.setdefault(key, []).append(value)
    return found


class Matcher:
    """Whether a container passes the filters (docker's rules of combination)."""

    def __init__(self, filters: dict[str, list[str]], store: Any,
                 containers: list[state.Container]) -> None:
        self.filters = filters
        self.store = store
        self.ancestors = [_ancestor(store, ref) for ref in filters.get("ancestor", [])]
        self.before = _bound(containers, filters.get("before"), "before")
        self.after = _bound(containers, filters.get("since"), "since")

    def __call__(self, c: state.Container, r: dict[str, Any], labels: dict[str, str]) -> bool:
        f = self.filters
        checks: list[Callable[[], bool]] = [
            lambda: _any(f.get("id"), lambda v: c.id.startswith(v) or _search(v, c.id)),
            lambda: _any(f.get("name"), lambda v: _search(v, c.name) or
                         _search(v, "/" + c.name)),
            lambda: _any(f.get("status"), lambda v: v == r["State"]),
            lambda: _any(f.get("exited"), lambda v: r["State"] == "exited"
                         and str(c.state().get("exit_code")) == str(int(v))),
            lambda: _any(f.get("network"), lambda v: v == r["Networks"]),
            lambda: all(_label_matches(v, labels) for v in f.get("label", [])),
            lambda: not self.ancestors or any(a(c) for a in self.ancestors),
            lambda: self.before is None or _created(c) < self.before,
            lambda: self.after is None or _created(c) > self.after,
        ]
        return all(check() for check in checks)


def _any(values: list[str] | None, test: Callable[[str], bool]) -> bool:
    return values is None or any(test(v) for v in values)


def _search(pattern: str, text: str) -> bool:
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return pattern in text


def _label_matches(spec: str, labels: dict[str, str]) -> bool:
    key, eq, value = spec.partition("=")
    return key in labels and (not eq or labels[key] == value)


def _created(c: state.Container) -> datetime:
    return _parse(c.config.get("created")) or datetime.min.replace(tzinfo=UTC)


def _bound(containers: list[state.Container], refs: list[str] | None, key: str
           ) -> datetime | None:
    if not refs:
        return None
    found = [c for c in containers if refs[-1] in (c.name, c.id)
             or (len(refs[-1]) >= 3 and c.id.startswith(refs[-1]))]
    if not found:
        raise UserError(f"No such container: {refs[-1]} (in filter {key})")
    return _created(found[0])


def _ancestor(store: Any, ref: str) -> Callable[[state.Container], bool]:
    """The image ``ref`` and every image built on it (its layers a prefix of theirs)."""
    image = store.find_image(ref)
    if image is None:
        return lambda _c: False
    ancestor = [str(p) for p in image.layer_dirs][::-1]  # bottom first

    def test(c: state.Container) -> bool:
        if c.config.get("image_id") == image.id:
            return True
        layers = [str(p) for p in c.config.get("layer_dirs", [])][::-1]
        return len(layers) > len(ancestor) and layers[: len(ancestor)] == ancestor
    return test


# -- output ---------------------------------------------------------------------------------


def select(store: Any, *, show_all: bool, last: int, filters: dict[str, list[str]],
           trunc: bool = True) -> list[dict[str, Any]]:
    """The rows ``ps`` shows, newest first: running ones (all with ``-a``, ``-n``, or a
    status filter), filtered, then the first ``last`` (when > 0)."""
    containers = sorted(state.all_containers(store), key=_created, reverse=True)
    match = Matcher(filters, store, containers)
    show_all = show_all or last > 0 or "status" in filters or "exited" in filters
    rows = []
    for c in containers:
        labels = {} if c.broken else state.container_labels(store, c)
        r = row(c, labels, datetime.now(UTC), trunc=trunc)
        if not show_all and r["State"] not in ("running", "paused"):
            continue
        if not match(c, r, labels):
            continue
        rows.append(r)
        if 0 < last <= len(rows):
            break
    return rows


def format_rows(rows: list[dict[str, Any]], fmt: str | None, quiet: bool) -> list[str]:
    """The lines to print: ids (``-q``), docker's table, a ``table`` template (aligned as
    docker's tabwriter does), ``json`` (one object a line) or a plain template."""
    if quiet:
        return [r["ID"] for r in rows]
    fmt = fmt or DEFAULT_TABLE
    if fmt.strip() == "table":
        fmt = DEFAULT_TABLE
    if fmt.strip() == "json":
        fmt = "{{json .}}"
    table = fmt.startswith("table")
    body = fmt[len("table"):].strip() if table else fmt
    body = body.replace("\\t", "\t").replace("\\n", "\n")
    lines = [render(body, r) for r in rows]
    if not table:
        return lines
    header = render(body, {**HEADERS, "Label": lambda _key: "LABEL"})
    return align([header, *lines])


def align(lines: list[str], minwidth: int = 10, padding: int = 3) -> list[str]:
    """Tab-separated cells in columns, as Go's tabwriter(minwidth 10, padding 3) aligns
    docker's tables: a cell ended by a tab is padded, the last cell of a line is not."""
    cells = [line.split("\t") for line in lines]
    columns = max((len(c) for c in cells), default=0)
    widths = [max([minwidth] + [len(c[i]) + padding for c in cells if i < len(c) - 1])
              for i in range(columns)]
    return ["".join(cell.ljust(widths[i]) if i < len(c) - 1 else cell
                    for i, cell in enumerate(c)).rstrip() for c in cells]
