"""Every console example in the README and docs/ runs as shown against a real server.

A ```console block holds commands (``$ `` lines, continued by ``> `` lines) each followed by
the output it prints. The blocks of one page run in order in one bash session (so a variable
set on the page is there for the next command), in an empty directory, against a fresh
``fleet-monitor serve`` on a free port (``127.0.0.1:6733`` on the page is rewritten to it).
The output must match the page exactly, but for ``Date`` and ``X-Request-ID`` values and a
device's arrival fields (``last_received_at``, ``clock_skew_ns``) and its outage totals (to
the run's now). A page
whose examples need other server options says so in a comment at its top:
``<!-- console examples: fleet-monitor serve --data-dir state -->``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fleet_monitor.config import Settings, env_name, parse_size, parse_switch
from tests.conftest import REPO, live_server

PAGES = [
    page
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    if "```console" in page.read_text(encoding="utf-8")
]
DOC_ADDRESS = "127.0.0.1:6733"
_SERVER_ARGS = re.compile(r"<!-- console examples: fleet-monitor serve(.*?)-->")
_VOLATILE = [
    (re.compile(r"(?im)^(date): .*$"), r"\1: <date>"),
    (re.compile(r"(?im)^(x-request-id): .*$"), r"\1: <request id>"),
    (re.compile(r'("last_received_at":)"[^"]*"'), r'\1"<arrival>"'),
    (re.compile(r'("clock_skew_ns":)-?[0-9]+'), r"\1<skew>"),
    # a device's outage totals run to the run's now (its open outage grows with the clock)
    (re.compile(r'("outages":)\{"count"[^}]*\}'), r"\1<totals to now>"),
]


@dataclass
class Step:
    """One command of a page and the output the page shows for it."""

    line: int
    command: str
    expected: str = ""


def console_steps(text: str) -> list[Step]:
    """The commands of every ```console block of ``text``, in order."""
    steps: list[Step] = []
    inside = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            inside = line.strip() == "```console" if not inside else False
            continue
        if not inside:
            continue
        if line.startswith("$ "):
            steps.append(Step(number, line[2:]))
        elif line.startswith("> ") and steps and not steps[-1].expected:
            steps[-1].command += "\n" + line[2:]
        elif steps:
            steps[-1].expected += line + "\n"
    return steps


def normalised(text: str) -> str:
    """``text`` without carriage returns, with Date, X-Request-ID and arrival values
    blanked."""
    text = text.replace("\r\n", "\n")
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return text


class Shell:
    """One bash session; :meth:`run` returns what a command printed (stdout and stderr)."""

    def __init__(self, cwd: Path) -> None:
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        self._bash = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # so that close() ends whatever a command left running
        )

    def run(self, command: str, timeout_s: float = 60) -> str:
        """What ``command`` printed; a command still running after ``timeout_s`` ends the
        session (the output then lacks the end marker and fails the comparison)."""
        assert self._bash.stdin is not None and self._bash.stdout is not None
        marker = f"__done_{uuid.uuid4().hex}__"
        self._bash.stdin.write(f"{command}\necho; echo {marker}\n")
        self._bash.stdin.flush()
        lines = []
        watchdog = threading.Timer(timeout_s, self.close)
        watchdog.start()
        try:
            for line in self._bash.stdout:
                if line.strip() == marker:
                    break
                lines.append(line)
        finally:
            watchdog.cancel()
        output = "".join(lines)
        return output[:-1] if output.endswith("\n") else output  # the echo before the marker

    def close(self) -> None:
        """End the session and every process it started."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._bash.pid, signal.SIGKILL)
        self._bash.communicate()


def server_args(text: str) -> list[str]:
    """The options the page's examples need, from its comment (none by default)."""
    found = _SERVER_ARGS.search(text)
    return shlex.split(found[1]) if found else []


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_console_examples_run_as_shown(page: Path, tmp_path: Path) -> None:
    text = page.read_text(encoding="utf-8")
    steps = console_steps(text)
    with live_server(tmp_path, server_args(text), cwd=tmp_path) as server:
        address = server.url.removeprefix("http://")
        shell = Shell(tmp_path)
        try:
            for step in steps:
                shown = normalised(step.expected).replace(DOC_ADDRESS, address)
                got = normalised(shell.run(step.command.replace(DOC_ADDRESS, address)))
                assert got == shown, f"{page.name}:{step.line}: $ {step.command}"
        finally:
            shell.close()


def test_steps_are_parsed_with_continuations_and_outputs() -> None:
    text = "```console\n$ a \\\n> b\nout 1\nout 2\n$ c\n```\n```sh\n$ not run\n```\n"
    steps = console_steps(text)
    assert [(s.line, s.command, s.expected) for s in steps] == [
        (2, "a \\\nb", "out 1\nout 2\n"),
        (6, "c", ""),
    ]


def test_the_module_map_names_every_module() -> None:
    design = (REPO / "docs" / "design.md").read_text(encoding="utf-8")
    modules = sorted(
        path.relative_to(REPO / "fleet_monitor").as_posix()
        for path in (REPO / "fleet_monitor").rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    )
    missing = [m for m in modules if m not in design and m.rsplit("/", 1)[-1] not in design]
    assert missing == []


def _shown_default(field: dataclasses.Field[Any]) -> str:
    value: Any = field.default
    parse = field.metadata["parse"]
    if value is None or value == ():
        return "none"
    if parse is parse_switch:
        return "on" if value else "off"
    if parse is parse_size:
        for unit, size in (("G", 1024**3), ("M", 1024**2), ("k", 1024)):
            if value % size == 0:
                return f"`{value // size}{unit}`"
    return f"`{value}`"


def test_the_readme_configuration_table_is_every_setting() -> None:
    """One row per setting, in order: its flag, variable, default and the --help text."""
    expected = [
        f"| `--{f.name.replace('_', '-')}` | `{env_name(f.name)}` | {_shown_default(f)} | "
        f"{f.metadata['help']} |"
        for f in dataclasses.fields(Settings)
    ]
    readme = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    start = readme.index("| flag | env | default | meaning |") + 2
    assert readme[start : start + len(expected) + 1] == [*expected, ""]
