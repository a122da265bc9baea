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
import math
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

_EDN_DELIMS = frozenset(" \t\r\n,()[]{}\"';")
_EDN_STRING_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}


class _EdnReader:
    """A recursive-descent reader for the EDN subset that Jepsen op maps use.

    Supported: maps, vectors, lists, sets, strings, integers (``42``, ``-7``, ``42N``),
    floats (``1.5``, ``1e3``, ``1.5M``), keywords (returned as their name without the
    colon, so ``:read`` reads as ``"read"``), ``nil``, ``true``, ``false``, commas as
    whitespace and ``;`` comments. Vectors and lists read as tuples, sets as frozensets,
    maps as dicts. Tagged literals, characters and symbols are rejected.
    """

    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def _skip_ws(self) -> None:
        text = self.text
        n = len(text)
        while self.pos < n:
            ch = text[self.pos]
            if ch in " \t\r\n,":
                self.pos += 1
            elif ch == ";":
                while self.pos < n and text[self.pos] != "\n":
                    self.pos += 1
            else:
                return

    def read_top(self) -> Any:
        """Read exactly one value and check nothing but whitespace follows it."""
        value = self.read()
        self._skip_ws()
        if self.pos != len(self.text):
            raise _ParseError(f"unexpected text after the value at column {self.pos + 1}")
        return value

    def read(self) -> Any:
        """Read one value starting at the current position."""
        self._skip_ws()
        text = self.text
        if self.pos >= len(text):
            raise _ParseError("unexpected end of line (truncated EDN value?)")
        ch = text[self.pos]
        if ch == "{":
            self.pos += 1
            items = self._read_seq("}")
            if len(items) % 2:
                raise _ParseError("map literal has an odd number of forms")
            result: dict[Any, Any] = {}
            for k, v in zip(items[::2], items[1::2], strict=True):
                try:
                    result[k] = v
                except TypeError as exc:
                    raise _ParseError(f"unhashable map key {k!r}") from exc
            return result
        if ch == "[":
            self.pos += 1
            return tuple(self._read_seq("]"))
        if ch == "(":
            self.pos += 1
            return tuple(self._read_seq(")"))
        if ch == "#":
            if text.startswith("#{", self.pos):
                self.pos += 2
                try:
                    return frozenset(self._read_seq("}"))
                except TypeError as exc:
                    raise _ParseError("unhashable element in a set literal") from exc
            if text.startswith("#_", self.pos):
                self.pos += 2
                self.read()  # discard the next form
                return self.read()
            raise _ParseError(f"unsupported EDN dispatch '#' at column {self.pos + 1}")
        if ch == '"':
            return self._read_string()
        if ch == ":":
            self.pos += 1
            token = self._read_token()
            if not token:
                raise _ParseError(f"empty keyword at column {self.pos}")
            return token
        if ch in ")]}":
            raise _ParseError(f"unexpected {ch!r} at column {self.pos + 1}")
        token = self._read_token()
        if not token:
            raise _ParseError(f"unexpected character {ch!r} at column {self.pos + 1}")
        return self._atom(token)

    def _read_seq(self, close: str) -> list[Any]:
        items: list[Any] = []
        text = self.text
        while True:
            self._skip_ws()
            if self.pos >= len(text):
                raise _ParseError(f"unexpected end of line: missing {close!r} (truncated?)")
            if text[self.pos] == close:
                self.pos += 1
                return items
            if text.startswith("#_", self.pos):
                self.pos += 2
                self.read()  # discard the next form
                continue
            items.append(self.read())

    def _read_token(self) -> str:
        text = self.text
        start = self.pos
        n = len(text)
        while self.pos < n and text[self.pos] not in _EDN_DELIMS:
            self.pos += 1
        return text[start : self.pos]

    def _read_string(self) -> str:
        text = self.text
        self.pos += 1  # opening quote
        out: list[str] = []
        n = len(text)
        while True:
            if self.pos >= n:
                raise _ParseError("unterminated string (truncated line?)")
            ch = text[self.pos]
            if ch == '"':
                self.pos += 1
                return "".join(out)
            if ch == "\\":
                if self.pos + 1 >= n:
                    raise _ParseError("unterminated string escape")
                esc = text[self.pos + 1]
                if esc in _EDN_STRING_ESCAPES:
                    out.append(_EDN_STRING_ESCAPES[esc])
                    self.pos += 2
                elif esc == "u":
                    digits = text[self.pos + 2 : self.pos + 6]
                    if len(digits) != 4 or any(c not in "0123456789abcdefABCDEF" for c in digits):
                        raise _ParseError(f"bad \\u escape at column {self.pos + 1}")
                    out.append(chr(int(digits, 16)))
                    self.pos += 6
                else:
                    raise _ParseError(f"unknown string escape \\{esc} at column {self.pos + 1}")
            else:
                out.append(ch)
                self.pos += 1

    def _atom(self, token: str) -> Any:
        if token == "nil":
            return None
        if token == "true":
            return True
        if token == "false":
            return False
        body = token[:-1] if token[-1] in "NM" and len(token) > 1 else token
        if body[0] in "0123456789" or (body[0] in "+-" and len(body) > 1 and body[1].isdigit()):
            try:
                if token.endswith("N") or all(c in "+-0123456789" for c in body):
                    return int(body)
                value = float(body)
            except ValueError as exc:
                raise _ParseError(f"bad number {token!r}") from exc
            if not math.isfinite(value):
                raise _ParseError(f"bad number {token!r}")
            return value
        raise _ParseError(f"unsupported EDN symbol {token!r} (only keywords, nil, true, false)")


def parse_edn(text: str) -> Any:
    """Parse one EDN value from ``text`` (the subset described in :class:`_EdnReader`).

    Keywords become plain strings without the leading colon, vectors and lists become
    tuples, sets frozensets, maps dicts. Raises :class:`ValueError` on bad syntax.
    """
    try:
        return _EdnReader(text).read_top()
    except _ParseError as exc:
        raise ValueError(str(exc)) from None
    except RecursionError:
        raise ValueError("EDN value nested too deeply") from None


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def _tupleize(value: Any) -> Any:
    """JSON arrays become tuples (recursively), so JSON and EDN read alike."""
    if isinstance(value, list):
        return tuple(_tupleize(v) for v in value)
    if isinstance(value, dict):
        return {k: _tupleize(v) for k, v in value.items()}
    return value


def _op_from_map(raw: Any) -> Op:
    """Validate one decoded op map and build an :class:`Op` (raises _ParseError)."""
    if not isinstance(raw, dict):
        raise _ParseError(f"expected an op map, got {type(raw).__name__}")
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
    return Op(
        process=process,
        type=op_type,
        f=f,
        key=raw.get("key"),
        value=raw.get("value"),
        time=time,
    )


def _parse_json_line(line: str) -> Op:
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _ParseError(f"invalid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise _ParseError("JSON value nested too deeply") from None
    return _op_from_map(_tupleize(raw))


def _parse_edn_line(line: str) -> Op:
    try:
        raw = _EdnReader(line).read_top()
    except RecursionError:
        raise _ParseError("EDN value nested too deeply") from None
    return _op_from_map(raw)


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
