"""A small runner for data-driven test files: commands in, expected text out.

A test file is a sequence of blocks separated by blank lines. Each block is a command
line, optional input lines, a ``----`` separator and the output the command is expected
to print::

    # comment lines (outside blocks) are kept as they are
    command arg1 arg2 key=value key=(v1,v2)
    optional input line
    ----
    expected output
    over as many lines as needed

An output that itself contains blank lines is fenced by a doubled separator::

    command
    ----
    ----
    first paragraph

    second paragraph
    ----
    ----

:func:`run_file` parses a file, calls a handler for each block (in order, so that the
blocks of one file build on each other), and compares the handler's output with the
expected text. With ``rewrite`` on it writes the actual outputs back into the file
instead, keeping the commands, inputs and comments, so that an intended change of
behaviour is recorded by running the tests once and reviewing ``git diff``.

:func:`check_file` does the same and fails with the position (``file:line``), the
command and a unified diff of every block whose output differs.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "REWRITE_ENV",
    "Arg",
    "DataDrivenError",
    "Mismatch",
    "TestData",
    "check_file",
    "format_mismatch",
    "parse",
    "rewrite_requested",
    "run_file",
]

SEPARATOR = "----"
REWRITE_ENV = "RUFLO_REWRITE_TESTDATA"


class DataDrivenError(Exception):
    """A test file is malformed, or a handler failed; the message says where."""


@dataclass(frozen=True, slots=True)
class Arg:
    """One argument of a command line: ``key`` alone, ``key=value`` or ``key=(v1,v2)``."""

    key: str
    vals: tuple[str, ...] = ()

    def __str__(self) -> str:
        if not self.vals:
            return self.key
        if len(self.vals) == 1:
            return f"{self.key}={self.vals[0]}"
        return f"{self.key}=({','.join(self.vals)})"


@dataclass(slots=True)
class TestData:
    """One block of a test file, as the handler sees it."""

    __test__ = False  # not a pytest test class, whatever its name says

    path: str
    line: int  # 1-based line of the command
    cmd: str
    args: list[Arg]
    input: str
    expected: str
    # where the block's separator and output sit in the file (0-based, end exclusive)
    out_start: int = field(default=0, repr=False)
    out_end: int = field(default=0, repr=False)

    @property
    def pos(self) -> str:
        """``file:line`` of the command."""
        return f"{self.path}:{self.line}"

    @property
    def command_line(self) -> str:
        """The command as written (normalised spacing)."""
        return " ".join([self.cmd, *(str(a) for a in self.args)])

    def positional(self) -> list[str]:
        """Arguments without a value, in order."""
        return [a.key for a in self.args if not a.vals]

    def has(self, key: str) -> bool:
        """True when ``key`` is given with a value."""
        return any(a.key == key and a.vals for a in self.args)

    def get(self, key: str, default: str | None = None) -> str | None:
        """The single value of ``key`` (the last one given), or ``default``."""
        found = default
        for a in self.args:
            if a.key == key and a.vals:
                if len(a.vals) != 1:
                    raise DataDrivenError(f"{self.pos}: {key} takes one value, got {a}")
                found = a.vals[0]
        return found

    def keyed(self) -> dict[str, tuple[str, ...]]:
        """Every ``key=value`` argument, by key."""
        return {a.key: a.vals for a in self.args if a.vals}


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A block whose actual output differs from the expected one."""

    pos: str
    command: str
    expected: str
    actual: str

    def diff(self) -> str:
        """A unified diff from the expected to the actual output."""
        lines = difflib.unified_diff(
            self.expected.splitlines(),
            self.actual.splitlines(),
            fromfile="expected",
            tofile="actual",
            lineterm="",
        )
        return "\n".join(lines)


def _split_args(text: str, where: str) -> list[str]:
    """Split a command line on spaces, keeping ``key=(a, b)`` together."""
    tokens: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise DataDrivenError(f"{where}: unbalanced ')' in {text!r}")
        if ch.isspace() and depth == 0:
            if cur:
                tokens.append("".join(cur))
                cur = []
            continue
        cur.append(ch)
    if depth:
        raise DataDrivenError(f"{where}: unbalanced '(' in {text!r}")
    if cur:
        tokens.append("".join(cur))
    return tokens


def _parse_arg(token: str, where: str) -> Arg:
    key, eq, value = token.partition("=")
    if not eq:
        return Arg(token)
    if not key:
        raise DataDrivenError(f"{where}: argument {token!r} has no key")
    if value.startswith("(") and value.endswith(")"):
        inner = value[1:-1].strip()
        vals = tuple(v.strip() for v in inner.split(",")) if inner else ()
        return Arg(key, vals)
    return Arg(key, (value,))


def parse(text: str, path: str = "<string>") -> list[TestData]:
    """The blocks of a test file, in order."""
    lines = text.split("\n")
    blocks: list[TestData] = []
    i = 0
    n = len(lines)
    while i < n:
        line = lines[i]
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        where = f"{path}:{i + 1}"
        if stripped == SEPARATOR:
            raise DataDrivenError(f"{where}: separator without a command")
        tokens = _split_args(stripped, where)
        cmd_line = i + 1
        i += 1
        inputs: list[str] = []
        while i < n and lines[i].strip() != SEPARATOR:
            if not lines[i].strip():
                raise DataDrivenError(f"{where}: command {tokens[0]!r} has no {SEPARATOR} line")
            inputs.append(lines[i])
            i += 1
        if i >= n:
            raise DataDrivenError(f"{where}: command {tokens[0]!r} has no {SEPARATOR} line")
        out_start = i
        i += 1
        out: list[str] = []
        if i < n and lines[i].strip() == SEPARATOR:
            # fenced output: runs until a doubled separator
            i += 1
            while True:
                if i + 1 >= n:
                    raise DataDrivenError(f"{where}: fenced output is not closed by '----/----'")
                if lines[i].strip() == SEPARATOR and lines[i + 1].strip() == SEPARATOR:
                    i += 2
                    break
                out.append(lines[i])
                i += 1
        else:
            while i < n and lines[i].strip():
                out.append(lines[i])
                i += 1
        blocks.append(
            TestData(
                path=path,
                line=cmd_line,
                cmd=tokens[0],
                args=[_parse_arg(t, where) for t in tokens[1:]],
                input="\n".join(inputs),
                expected="\n".join(out),
                out_start=out_start,
                out_end=i,
            )
        )
    return blocks


def _normalise(output: str) -> str:
    """Trailing spaces of each line and trailing blank lines never matter."""
    return "\n".join(line.rstrip() for line in output.rstrip("\n").split("\n")).strip("\n")


def _render_output(output: str) -> list[str]:
    """The lines that replace a block's separator and expected output."""
    body = output.split("\n") if output else []
    if any(not line.strip() for line in body):
        return [SEPARATOR, SEPARATOR, *body, SEPARATOR, SEPARATOR]
    return [SEPARATOR, *body]


def rewrite_requested(option: bool = False) -> bool:
    """True when the pytest option is on or ``RUFLO_REWRITE_TESTDATA`` is set (not 0)."""
    env = os.environ.get(REWRITE_ENV, "").strip().lower()
    return option or env not in ("", "0", "false", "no")


def run_file(
    path: str | Path,
    handler: Callable[[TestData], str],
    *,
    rewrite: bool = False,
) -> list[Mismatch]:
    """Run every block of ``path`` through ``handler``; return the mismatching blocks.

    With ``rewrite`` the file is rewritten with the actual outputs (only if any differ)
    and nothing is reported as a mismatch. An exception in the handler is raised again
    as :class:`DataDrivenError` naming the block.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    shown = str(path)
    if path.is_absolute() and path.is_relative_to(Path.cwd()):
        shown = str(path.relative_to(Path.cwd()))
    blocks = parse(text, shown)
    mismatches: list[Mismatch] = []
    actuals: list[str] = []
    for td in blocks:
        try:
            actual = handler(td)
        except Exception as exc:
            raise DataDrivenError(
                f"{td.pos}: {td.command_line!r} raised {type(exc).__name__}: {exc}"
            ) from exc
        actual = _normalise(actual)
        if any(line.strip() == SEPARATOR for line in actual.split("\n")):
            raise DataDrivenError(
                f"{td.pos}: the output of {td.command_line!r} holds a "
                f"{SEPARATOR!r} line, which the file format cannot keep"
            )
        actuals.append(actual)
        if actual != _normalise(td.expected):
            mismatches.append(Mismatch(td.pos, td.command_line, td.expected, actual))
    if not rewrite:
        return mismatches
    if mismatches:
        lines = text.split("\n")
        out: list[str] = []
        at = 0
        for td, actual in zip(blocks, actuals, strict=True):
            out.extend(lines[at : td.out_start])
            out.extend(_render_output(actual))
            at = td.out_end
        out.extend(lines[at:])
        path.write_text("\n".join(out), encoding="utf-8")
    return []


def format_mismatch(m: Mismatch) -> str:
    """Where, what, and how the output differs."""
    return f"{m.pos}: output of {m.command!r} differs\n{m.diff()}"


def check_file(
    path: str | Path,
    handler: Callable[[TestData], str],
    *,
    rewrite: bool = False,
    show: int = 3,
) -> None:
    """:func:`run_file`, failing with the first ``show`` mismatches (position and diff)."""
    mismatches = run_file(path, handler, rewrite=rewrite)
    if not mismatches:
        return
    parts = [format_mismatch(m) for m in mismatches[:show]]
    more = len(mismatches) - show
    if more > 0:
        parts.append(f"... and {more} more block(s) differ")
    parts.append(
        f"(if the change is intended: rerun with --rewrite-testdata or {REWRITE_ENV}=1 "
        "and review git diff)"
    )
    raise AssertionError("\n\n".join(parts))
