"""Operation histories: the event record a linearizability check reads.

A history is a list of :class:`Op` events in real-time order. Each client operation is an
``invoke`` event followed, later in the list, by one completion event of the same process:

* ``ok``   -- the operation happened; for a read the observed value is in the completion;
* ``fail`` -- the operation certainly did *not* happen (it is dropped from the search);
* ``info`` -- unknown: it may or may not have happened, at any instant after its invoke.

An invoke with no completion at the end of the history is treated like ``info``.

:func:`load_history` reads two on-disk forms, detected per file from the first non-blank
line: JSON Lines of Jepsen-style maps, or Jepsen EDN op maps, one per line::

    {"process": 0, "type": "invoke", "f": "write", "key": null, "value": 3}
    {:process 0, :type :ok, :f :write, :value 3, :time 12345}

Every problem with a file is reported as a :class:`HistoryError` that names the file and
the line; no other exception type escapes :func:`load_history`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "OP_TYPES",
    "HistoryError",
    "Op",
    "dump_history_jsonl",
    "load_history",
    "ops_to_jsonl",
    "parse_edn",
    "validate_pairing",
]

OP_TYPES = frozenset({"invoke", "ok", "fail", "info"})
"""The allowed values of :attr:`Op.type`."""


@dataclass(frozen=True, slots=True)
class Op:
    """One history event: an invocation or a completion of a client operation.

    ``process`` identifies the client (an ``int`` or a ``str``); ``type`` is one of
    ``"invoke"``, ``"ok"``, ``"fail"``, ``"info"``; ``f`` names the operation (``"read"``,
    ``"write"``, ``"cas"``, ``"get"``, ``"put"``, ``"append"``, or anything a user model
    understands); ``key`` and ``value`` are its arguments / results. ``time`` is kept for
    information only: the position of the event in the history list *is* its real-time
    order.
    """

    process: int | str
    type: str
    f: str
    key: Any = None
    value: Any = None
    time: float | None = None

    def __post_init__(self) -> None:
        if self.type not in OP_TYPES:
            raise ValueError(f"Op.type must be one of {sorted(OP_TYPES)}, got {self.type!r}")
        if isinstance(self.process, bool) or not isinstance(self.process, int | str):
            raise ValueError(f"Op.process must be an int or a str, got {self.process!r}")
        if not isinstance(self.f, str):
            raise ValueError(f"Op.f must be a str, got {self.f!r}")


class HistoryError(ValueError):
    """A history is malformed. ``path`` and ``line`` (1-based) locate the problem.

    For files, ``line`` is the file line; for in-memory histories (``path`` is ``None``),
    ``line`` is the 1-based position of the offending event in the list. Either may be
    ``None`` when the problem has no single location (e.g. an unreadable file).
    """

    def __init__(self, reason: str, path: str | None = None, line: int | None = None) -> None:
        self.reason = reason
        self.path = path
        self.line = line
        if path is not None and line is not None:
            message = f"{path}:{line}: {reason}"
        elif path is not None:
            message = f"{path}: {reason}"
        elif line is not None:
            message = f"history event {line}: {reason}"
        else:
            message = reason
        super().__init__(message)


class _ParseError(Exception):
    """Internal: a syntax error inside one line (converted to HistoryError)."""


# --------------------------------------------------------------------------------------
# EDN subset reader
# --------------------------------------------------------------------------------------

_EDN_TOKEN = re.compile(
    r"""
    [\s,]+ | ;[^\n]*                      # whitespace, commas and comments: skipped
    | (?P<str>"(?:[^"\\]|\\.)*")          # a complete string literal
    | (?P<open>\#\{|[{\[(])               # map, vector, list or set opener
    | (?P<close>[}\])])
    | (?P<disc>\#_)                       # discard the next form
    | (?P<atom>[^\s,()\[\]{}";]+)         # keyword, number, nil/true/false, symbol
    | (?P<bad>.)                          # anything else (e.g. an unterminated string)
    """,
    re.VERBOSE | re.DOTALL,
)
_EDN_CLOSERS = {"{": "}", "#{": "}", "[": "]", "(": ")"}
_EDN_MAX_DEPTH = 256
_EDN_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)
_EDN_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}
_EDN_INT = re.compile(r"[+-]?\d+N?")
_EDN_FLOAT = re.compile(r"[+-]?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?M?")


def _edn_unescape(match: re.Match[str]) -> str:
    esc = match.group(1)
    if len(esc) == 5:
        return chr(int(esc[1:], 16))
    try:
        return _EDN_ESCAPES[esc]
    except KeyError:
        raise _ParseError(f"unknown string escape \\{esc}") from None


def _edn_atom(token: str, column: int) -> Any:
    first = token[0]
    if first == ":":
        if len(token) == 1:
            raise _ParseError(f"empty keyword at column {column}")
        return token[1:]
    if token.isdigit():
        return int(token)
    if token == "nil":
        return None
    if token == "true":
        return True
    if token == "false":
        return False
    if _EDN_INT.fullmatch(token):
        return int(token.rstrip("N"))
    if _EDN_FLOAT.fullmatch(token):
        return float(token.rstrip("M"))
    if first == "#":
        raise _ParseError(f"unsupported EDN tagged literal {token!r} at column {column}")
    if first in "0123456789" or (len(token) > 1 and first in "+-" and token[1].isdigit()):
        raise _ParseError(f"bad number {token!r} at column {column}")
    raise _ParseError(
        f"unsupported EDN symbol {token!r} at column {column} (only keywords, nil, true, false)"
    )


def _edn_build(opener: str, items: list[Any], column: int) -> Any:
    if opener == "{":
        if len(items) % 2:
            raise _ParseError(f"map starting at column {column} has an odd number of forms")
        result: dict[Any, Any] = {}
        for k, v in zip(items[::2], items[1::2], strict=True):
            try:
                result[k] = v
            except TypeError:
                raise _ParseError(f"unhashable map key {k!r}") from None
        return result
    if opener == "#{":
        try:
            return frozenset(items)
        except TypeError:
            raise _ParseError("unhashable element in a set literal") from None
    return tuple(items)


def _edn_read(text: str) -> Any:
    """Read exactly one EDN value from ``text`` (iteratively; at most 256 levels deep).

    Supported: maps, vectors, lists, sets, strings, integers (``42``, ``-7``, ``42N``),
    floats (``1.5``, ``1e3``, ``1.5M``), keywords (returned as their name without the
    colon, so ``:read`` reads as ``"read"``), ``nil``, ``true``, ``false``, commas as
    whitespace, ``;`` comments and ``#_`` discards. Vectors and lists read as tuples, sets
    as frozensets, maps as dicts. Tagged literals, characters and symbols are rejected.
    """
    # frame: [opener, items, pending discards, column]
    stack: list[list[Any]] = [["", [], 0, 0]]
    frame = stack[0]
    for match in _EDN_TOKEN.finditer(text):
        kind = match.lastgroup
        if kind is None:
            continue
        value: Any
        if kind == "atom":
            token = match.group(kind)
            if token[0] == ":" and len(token) > 1:
                value = token[1:]
            else:
                value = _edn_atom(token, match.start() + 1)
        elif kind == "open":
            if len(stack) > _EDN_MAX_DEPTH:
                raise _ParseError(f"EDN value nested more than {_EDN_MAX_DEPTH} levels deep")
            frame = [match.group(kind), [], 0, match.start() + 1]
            stack.append(frame)
            continue
        elif kind == "close":
            token = match.group(kind)
            if len(stack) == 1:
                raise _ParseError(f"unexpected {token!r} at column {match.start() + 1}")
            opener, items, discards, start = stack.pop()
            frame = stack[-1]
            if _EDN_CLOSERS[opener] != token:
                raise _ParseError(f"{opener!r} at column {start} closed by {token!r}")
            if discards:
                raise _ParseError(f"'#_' with nothing to discard before column {match.start()}")
            value = _edn_build(opener, items, start)
        elif kind == "str":
            body = match.group(kind)[1:-1]
            value = _EDN_ESCAPE.sub(_edn_unescape, body) if "\\" in body else body
        elif kind == "disc":
            frame[2] += 1
            continue
        elif match.group(kind) == '"':
            raise _ParseError(f"unterminated string at column {match.start() + 1} (truncated?)")
        else:
            raise _ParseError(
                f"unexpected character {match.group(kind)!r} at column {match.start() + 1}"
            )
        if frame[2]:
            frame[2] -= 1
        else:
            frame[1].append(value)
    if len(stack) > 1:
        opener, _, _, start = stack[-1]
        raise _ParseError(
            f"unexpected end of line: {opener!r} at column {start} is not closed (truncated?)"
        )
    _, items, discards, _ = stack[0]
    if discards:
        raise _ParseError("'#_' with nothing to discard")
    if not items:
        raise _ParseError("no EDN value on the line")
    if len(items) > 1:
        raise _ParseError("more than one EDN value on the line")
    return items[0]


def parse_edn(text: str) -> Any:
    """Parse one EDN value from ``text`` (the subset described in :func:`_edn_read`).

    Keywords become plain strings without the leading colon, vectors and lists become
    tuples, sets frozensets, maps dicts. Raises :class:`ValueError` on bad syntax.
    """
    try:
        return _edn_read(text)
    except _ParseError as exc:
        raise ValueError(str(exc)) from None


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


_SCALARS = frozenset({int, str, float, bool, type(None)})


def _tupleize(value: Any) -> Any:
    """JSON arrays become tuples (recursively), so JSON and EDN read alike."""
    if type(value) in _SCALARS:
        return value
    if isinstance(value, list):
        return tuple(_tupleize(v) for v in value)
    if isinstance(value, dict):
        return {k: _tupleize(v) for k, v in value.items()}
    return value


def _edn_type_name(value: Any) -> str:
    """A readable EDN type name for error messages."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, tuple):
        return "a vector"
    if isinstance(value, frozenset):
        return "a set"
    if isinstance(value, str):
        return "a keyword or string"
    return "a number"


def _op_from_map(raw: Any, from_json: bool = False) -> Op:
    """Validate one decoded op map and build an :class:`Op` (raises _ParseError).

    For JSON, arrays in ``key`` and ``value`` are turned into tuples.
    """
    if not isinstance(raw, dict):
        raise _ParseError(f"expected an op map, got {_edn_type_name(raw)}")
    for field in ("process", "type", "f"):
        if field not in raw:
            raise _ParseError(f"op map has no {field!r}")
    process = raw["process"]
    if isinstance(process, bool) or not isinstance(process, int | str):
        raise _ParseError(f"'process' must be an integer or a string, got {process!r}")
    op_type = raw["type"]
    if not isinstance(op_type, str) or op_type not in OP_TYPES:
        raise _ParseError(f"'type' must be one of invoke, ok, fail, info; got {op_type!r}")
    f = raw["f"]
    if not isinstance(f, str):
        raise _ParseError(f"'f' must be a string or keyword, got {f!r}")
    raw_time = raw.get("time")
    time: float | None = None
    if isinstance(raw_time, int | float) and not isinstance(raw_time, bool):
        time = float(raw_time)
    key = raw.get("key")
    value = raw.get("value")
    if from_json:
        key = _tupleize(key)
        value = _tupleize(value)
    return Op(process, op_type, f, key, value, time)


def _parse_json_line(line: str) -> Op:
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _ParseError(f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise _ParseError("JSON value nested too deeply") from None
    if not isinstance(raw, dict):
        kind = {list: "array", str: "string", bool: "boolean"}.get(type(raw), "number")
        if raw is None:
            kind = "null"
        raise _ParseError(f"expected a JSON object (op map), got a JSON {kind}")
    return _op_from_map(raw, from_json=True)


def _parse_edn_line(line: str) -> Op:
    return _op_from_map(_edn_read(line))


def _detect_format(line: str) -> str:
    """``"json"`` or ``"edn"`` from the first non-blank line, else raise _ParseError."""
    stripped = line.lstrip(" \t,")
    if not stripped.startswith("{"):
        raise _ParseError("not a history: expected a JSON object or an EDN map ('{...}')")
    rest = stripped[1:].lstrip(" \t,")
    if rest.startswith(":"):
        return "edn"
    if rest.startswith('"') or rest.startswith("}"):
        return "json"
    raise _ParseError("not a history: expected a JSON object or an EDN map with keyword keys")


def validate_pairing(
    ops: Sequence[Op],
    path: str | None = None,
    lines: Sequence[int] | None = None,
) -> None:
    """Check that invokes and completions pair up per process.

    Raises :class:`HistoryError` on a completion with no outstanding invoke of its process,
    on a second invoke while one is outstanding for the process, and on a completion whose
    ``f`` differs from its invoke's. Invokes still outstanding at the end are allowed (they
    are treated as ``info``). ``lines`` maps event positions to file lines for messages;
    without it the 1-based event position is reported.
    """
    outstanding: dict[int | str, int] = {}
    for i, op in enumerate(ops):
        line = lines[i] if lines is not None else i + 1
        if op.type == "invoke":
            if op.process in outstanding:
                prev = outstanding[op.process]
                prev_line = lines[prev] if lines is not None else prev + 1
                raise HistoryError(
                    f"process {op.process!r} invokes {op.f!r} while its invoke at "
                    f"{'line' if lines is not None else 'event'} {prev_line} is still "
                    "outstanding",
                    path,
                    line,
                )
            outstanding[op.process] = i
        else:
            start = outstanding.pop(op.process, None)
            if start is None:
                raise HistoryError(
                    f"{op.type!r} completion of {op.f!r} by process {op.process!r} "
                    "has no outstanding invoke",
                    path,
                    line,
                )
            if ops[start].f != op.f:
                raise HistoryError(
                    f"completion f {op.f!r} does not match its invoke's f {ops[start].f!r}",
                    path,
                    line,
                )


def load_history(path: str | Path) -> list[Op]:
    """Read a history file (JSON Lines or EDN, detected from the first non-blank line).

    Blank lines are ignored; every other line must hold exactly one op map. In EDN,
    ``:time``, ``:index`` and unknown keys are ignored (a numeric ``time`` is kept in
    :attr:`Op.time` for information); the same holds for JSON. Arrays / vectors become
    tuples. Raises :class:`HistoryError` naming the file and line for an unreadable or
    empty file, non-UTF-8 data, a syntax error, a wrong field type, or a pairing error
    (see :func:`validate_pairing`).
    """
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise HistoryError(f"cannot read file: {exc.strerror or exc}", name, None) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_no = data.count(b"\n", 0, exc.start) + 1
        raise HistoryError("not UTF-8 text (binary data?)", name, line_no) from None
    if text.startswith("\ufeff"):
        text = text[1:]

    ops: list[Op] = []
    lines: list[int] = []
    parse = None
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            if parse is None:
                parse = _parse_edn_line if _detect_format(line) == "edn" else _parse_json_line
            ops.append(parse(line))
        except (_ParseError, ValueError) as exc:
            raise HistoryError(str(exc), name, line_no) from None
        lines.append(line_no)
    if not ops:
        raise HistoryError("empty history (no operations)", name, 1)
    validate_pairing(ops, name, lines)
    return ops


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    raise TypeError(f"value {value!r} of type {type(value).__name__} is not JSON serialisable")


def ops_to_jsonl(ops: Iterable[Op]) -> str:
    """Serialise ops as JSON Lines (one map per line, trailing newline).

    ``key`` is written only when not ``None`` and ``time`` only when set; tuples become
    arrays (so they read back as tuples), sets become sorted arrays.
    """
    out: list[str] = []
    for op in ops:
        record: dict[str, Any] = {"process": op.process, "type": op.type, "f": op.f}
        if op.key is not None:
            record["key"] = op.key
        record["value"] = op.value
        if op.time is not None:
            record["time"] = op.time
        out.append(json.dumps(record, default=_json_default, separators=(", ", ": ")))
    return "".join(line + "\n" for line in out)


def dump_history_jsonl(ops: Iterable[Op], path: str | Path) -> None:
    """Write ``ops`` to ``path`` as JSON Lines (see :func:`ops_to_jsonl`)."""
    Path(path).write_text(ops_to_jsonl(ops), encoding="utf-8")
