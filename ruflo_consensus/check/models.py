"""Sequential specifications ("models") that a history is checked against.

A :class:`Model` says, for a model state and one :class:`Operation`, whether the operation
is legal from that state and what the state becomes. States must be hashable: the search
memoises (set of linearised operations, state) pairs.

Two models are built in and registered by name:

* ``"register"`` -- :class:`RegisterModel`, one register (``read`` / ``write`` / ``cas``);
* ``"kv"`` -- :class:`KVModel`, a string key-value map (``get`` / ``put`` / ``append`` /
  ``cas``), partitioned by key.

Users subclass :class:`Model` and call :func:`register_model` to check their own
datatypes; see ``docs/checker.md`` for an example.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "InvalidOperationError",
    "KVModel",
    "Model",
    "Operation",
    "RegisterModel",
    "UnknownModelError",
    "get_model",
    "model_names",
    "register_model",
]


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation: an invoke paired with its completion.

    ``index`` numbers the operations of the whole history in invoke order (0-based).
    ``call`` and ``ret`` are the 0-based positions of the invoke and completion events in
    the history list. ``status`` is ``"ok"`` (it happened, and ``output`` is its result) or
    ``"info"`` (unknown: it may have happened at any point after its call; ``output`` is
    ``None``). For ``info`` operations the search places the return at +infinity; ``ret``
    is then the position of the ``info`` event, or ``None`` for an invoke that never
    completed. ``input`` is the invoke's value and ``output`` the ``ok`` completion's value;
    lists and dicts in either are frozen into tuples / frozensets so they can be hashed.
    """

    index: int
    process: int | str
    f: str
    key: Any
    input: Any
    output: Any
    call: int
    ret: int | None
    status: str

    @property
    def is_info(self) -> bool:
        """True when the outcome is unknown (``info`` completion or no completion)."""
        return self.status != "ok"


class UnknownModelError(ValueError):
    """No model is registered under the requested name."""

    def __init__(self, name: str) -> None:
        self.name = name
        known = ", ".join(model_names())
        super().__init__(f"unknown model {name!r} (known models: {known})")


class InvalidOperationError(ValueError):
    """An operation does not fit the model (unknown ``f``, malformed ``cas`` value, ...).

    ``op`` is the offending :class:`Operation`; the message gives its event positions.
    """

    def __init__(self, op: Operation, reason: str) -> None:
        self.op = op
        self.reason = reason
        super().__init__(
            f"history event {op.call + 1} (process {op.process!r}, f {op.f!r}): {reason}"
        )


class Model:
    """Base class of sequential specifications. Subclass it to check your own datatype.

    Required: set :attr:`name` and implement :meth:`init` and :meth:`step`. Optional:
    :meth:`partition` (split a history into independent sub-histories -- the history is
    linearizable iff each part is), :meth:`validate` (reject ops the model cannot
    interpret before searching), :meth:`read_only` (declare queries, which makes the
    search faster and lets ``info`` queries be dropped), :meth:`simplify` (drop ``info``
    ops that cannot matter), and the ``describe_*`` helpers used by failure reports.

    Models must be deterministic and must not mutate states: :meth:`step` returns a new
    state. States must be hashable and equal states must be interchangeable.
    """

    name: str = "model"

    def init(self) -> Hashable:
        """Return the initial state."""
        raise NotImplementedError

    def step(self, state: Any, op: Operation) -> tuple[bool, Hashable]:
        """Return ``(legal, new_state)`` for applying ``op`` in ``state``.

        ``legal`` says whether ``op`` -- with its observed ``output`` when
        ``op.status == "ok"`` -- is a correct sequential execution from ``state``. For an
        ``info`` op the output is unknown; the model should accept any result and only
        apply the effect. ``new_state`` is ignored when ``legal`` is false.
        """
        raise NotImplementedError

    def partition(self, ops: list[Operation]) -> list[list[Operation]]:
        """Split ops into independently checkable groups (default: one group)."""
        return [ops]

    def validate(self, op: Operation) -> None:
        """Raise :class:`InvalidOperationError` if ``op`` makes no sense for this model."""

    def read_only(self, op: Operation) -> bool:
        """True if ``op`` never changes the state: wherever it is legal, ``step`` returns
        the state it was given (a query, such as a read).

        The default is False, which is always safe. Declaring queries lets the search
        commit to a legal query as soon as it can be linearised, without exploring the
        alternatives (moving a state-preserving operation earlier cannot invalidate a
        linearization), and lets the default :meth:`simplify` drop ``info`` queries. A
        wrong True makes the checker unsound.
        """
        return False

    def simplify(self, ops: list[Operation]) -> list[Operation]:
        """Remove ``info`` operations of one partition that cannot change the verdict.

        Called on each partition before the search. It must keep every ``ok`` operation
        and may drop an ``info`` operation only if the partition is linearizable without
        it whenever it is linearizable with it (dropping means "it did not happen"). Fewer
        ``info`` operations make the search much faster. The default drops the ``info``
        operations that are :meth:`read_only` (their unknown result constrains nothing).
        """
        return [op for op in ops if not (op.is_info and self.read_only(op))]

    def observers(self, ops: list[Operation], info: Operation) -> list[Operation] | None:
        """The ``ok`` operations of partition ``ops`` that may see an effect of ``info``.

        ``info`` is an ``info`` operation of ``ops``. The search stops considering it
        once every operation returned here is linearised, so return a list only if,
        from *any* state, the rest of the partition is linearizable without ``info``
        whenever it is linearizable with it once those operations are placed (the
        per-operation form of :meth:`simplify`'s rule). The default, None ("any
        operation may"), is always safe.
        """
        return None

    def describe_op(self, op: Operation) -> str:
        """A short readable form of ``op``, e.g. ``"write 3"`` or ``"read -> 3"``."""
        key = "" if op.key is None else f" {op.key!r}"
        if op.status == "ok":
            return f"{op.f}{key} {op.input!r} -> {op.output!r}"
        return f"{op.f}{key} {op.input!r} -> ? (info)"

    def describe_state(self, state: Any) -> str:
        """A short readable form of a model state."""
        return repr(state)


_READS = frozenset({"read", "get"})
_WRITES = frozenset({"write", "put"})


def _cas_pair(op: Operation) -> tuple[Any, Any]:
    value = op.input
    if not isinstance(value, tuple) or len(value) != 2:
        raise InvalidOperationError(op, f"cas value must be [old, new], got {value!r}")
    return value[0], value[1]


class RegisterModel(Model):
    """A single register holding any hashable value, initially ``None``.

    ``read`` (alias ``get``) with ok value ``v`` is legal iff the register holds ``v``;
    ``write`` (alias ``put``) stores its value; ``cas`` with value ``[old, new]`` is legal
    iff the register holds ``old`` and then stores ``new``. ``key`` is ignored -- use
    ``"kv"`` for histories over many keys.
    """

    name = "register"

    def init(self) -> Hashable:
        """The register starts empty (``None``)."""
        return None

    def step(self, state: Any, op: Operation) -> tuple[bool, Hashable]:
        """Apply one read / write / cas to the register value ``state``."""
        f = op.f
        if f in _READS:
            return (op.status != "ok" or op.output == state), state
        if f in _WRITES:
            return True, op.input
        # cas
        old, new = op.input
        if state == old:
            return True, new
        return False, state

    def validate(self, op: Operation) -> None:
        """Accept read/get, write/put, and cas with an ``[old, new]`` value."""
        if op.f == "cas":
            _cas_pair(op)
        elif op.f not in _READS and op.f not in _WRITES:
            raise InvalidOperationError(
                op, "the register model understands read, write and cas only"
            )

    def read_only(self, op: Operation) -> bool:
        """Reads (``read`` / ``get``) never change the register."""
        return op.f in _READS

    def simplify(self, ops: list[Operation]) -> list[Operation]:
        """Drop info reads, and info writes / cas whose written value is never observed.

        A value is *observed* if an ``ok`` read returned it or any ``cas`` expected it. If
        an unobserved value was written, no read or successful cas can run until it is
        overwritten, so leaving the write out keeps every linearization valid.
        """
        observed: set[Any] = set()
        for op in ops:
            if op.f in _READS and op.status == "ok":
                observed.add(op.output)
            elif op.f == "cas":
                observed.add(op.input[0])
        kept: list[Operation] = []
        for op in ops:
            if op.is_info:
                if op.f in _READS:
                    continue
                written = op.input[1] if op.f == "cas" else op.input
                if written not in observed:
                    continue
            kept.append(op)
        return kept

    def observers(self, ops: list[Operation], info: Operation) -> list[Operation] | None:
        """Ok reads of the value ``info`` writes and cas expecting it (see :meth:`simplify`)."""
        if info.f in _READS:
            return []
        written = info.input[1] if info.f == "cas" else info.input
        found: list[Operation] = []
        for op in ops:
            if op.f == "cas" and op.input[0] == written:
                if op.status != "ok":
                    return None  # an info cas may observe it and never be placed
                found.append(op)
            elif op.f in _READS and op.status == "ok" and op.output == written:
                found.append(op)
        return found

    def describe_op(self, op: Operation) -> str:
        """``read -> v``, ``write v`` or ``cas old -> new`` (plus ``(info)``)."""
        suffix = "" if op.status == "ok" else " (info)"
        if op.f in _READS:
            result = repr(op.output) if op.status == "ok" else "?"
            return f"{op.f} -> {result}{suffix}"
        if op.f == "cas":
            old, new = op.input
            return f"cas {old!r} -> {new!r}{suffix}"
        return f"{op.f} {op.input!r}{suffix}"


def _kv_norm(value: Any) -> Any:
    """In the kv model ``None`` and ``""`` both mean "empty"."""
    return "" if value is None else value


class KVModel(Model):
    """A map from keys to string values; a key never written holds ``""``.

    ``get`` (alias ``read``) with ok value ``v`` is legal iff the key holds ``v``;
    ``put`` (alias ``write``) stores the value; ``append`` concatenates a string onto the
    key's value (illegal if the current value is not a string); ``cas`` ``[old, new]`` is
    legal iff the key holds ``old``. ``None`` is treated as ``""`` everywhere (a ``get``
    that returns ``nil`` means "empty"). Histories are partitioned by key.

    The state is a tuple of ``(key, value)`` pairs (only written keys); within a key
    partition it has at most one pair.
    """

    name = "kv"

    def init(self) -> Hashable:
        """No key has been written."""
        return ()

    def step(self, state: Any, op: Operation) -> tuple[bool, Hashable]:
        """Apply one get / put / append / cas to the map ``state``."""
        # Written inline (no helper calls): this is the checker's innermost loop.
        key = op.key
        at = -1
        current: Any = ""
        for n, pair in enumerate(state):
            if pair[0] == key:
                at = n
                current = pair[1]
                break
        f = op.f
        if f in _READS:
            if op.status != "ok":
                return True, state
            out = op.output
            return (current == (out if out is not None else "")), state
        value = op.input
        if f in _WRITES:
            new = value if value is not None else ""
        elif f == "append":
            if not isinstance(current, str):
                return False, state
            new = current + (value if value is not None else "")
        else:
            old = value[0]
            if current != (old if old is not None else ""):
                return False, state
            new = value[1] if value[1] is not None else ""
        if at < 0:
            return True, (*state, (key, new))
        if len(state) == 1:
            return True, ((key, new),)
        return True, (*state[:at], (key, new), *state[at + 1 :])

    def validate(self, op: Operation) -> None:
        """Accept get/read, put/write, append of a string, and cas ``[old, new]``."""
        if op.f == "cas":
            _cas_pair(op)
        elif op.f == "append":
            if not isinstance(_kv_norm(op.input), str):
                raise InvalidOperationError(op, f"append value must be a string: {op.input!r}")
        elif op.f not in _READS and op.f not in _WRITES:
            raise InvalidOperationError(
                op, "the kv model understands get, put, append and cas only"
            )

    def partition(self, ops: list[Operation]) -> list[list[Operation]]:
        """One partition per key (P-compositionality)."""
        groups: dict[Any, list[Operation]] = {}
        for op in ops:
            group = groups.get(op.key)
            if group is None:
                groups[op.key] = [op]
            else:
                group.append(op)
        return list(groups.values())

    def read_only(self, op: Operation) -> bool:
        """Gets (``get`` / ``read``) never change the map."""
        return op.f in _READS

    def simplify(self, ops: list[Operation]) -> list[Operation]:
        """Drop info gets and info updates whose effect no observation can contain.

        Observations are ``ok`` get results and every ``cas`` expected value. An info
        ``append s`` is dropped when no observation contains ``s`` (an empty append always);
        when every written value is a string, an info ``put v`` / ``cas [_, v]`` is dropped
        when no observation starts with ``v``. In both cases the value it would leave
        can be neither read nor compared until a put overwrites it, so leaving the
        operation out keeps every linearization valid.
        """
        observed: list[Any] = []
        all_strings = True
        for op in ops:
            if op.f in _READS:
                if op.status == "ok":
                    observed.append(_kv_norm(op.output))
            elif op.f == "cas":
                old, new = op.input
                observed.append(_kv_norm(old))
                all_strings = all_strings and isinstance(_kv_norm(new), str)
            elif op.f in _WRITES:
                all_strings = all_strings and isinstance(_kv_norm(op.input), str)
        observed_strings = [v for v in set(observed) if isinstance(v, str)]

        def unobserved_prefix(value: Any) -> bool:
            return all_strings and not any(v.startswith(value) for v in observed_strings)

        kept: list[Operation] = []
        for op in ops:
            if op.is_info:
                if op.f in _READS:
                    continue
                if op.f == "append":
                    suffix = _kv_norm(op.input)
                    if not any(suffix in v for v in observed_strings):
                        continue
                elif op.f == "cas":
                    if unobserved_prefix(_kv_norm(op.input[1])):
                        continue
                elif unobserved_prefix(_kv_norm(op.input)):
                    continue
            kept.append(op)
        return kept

    def observers(self, ops: list[Operation], info: Operation) -> list[Operation] | None:
        """The observation rule of :meth:`simplify`, for one info operation.

        Ok gets observe through their result, cas through its expected value: an info
        append is observed by a string containing its suffix, an info put / cas (only
        when every written value is a string) by a string starting with its value.
        """
        if info.f in _READS:
            return []
        if info.f == "append":
            effect = _kv_norm(info.input)
            if not isinstance(effect, str):
                return None
        else:
            effect = _kv_norm(info.input[1] if info.f == "cas" else info.input)
            for op in ops:
                if op.f == "cas":
                    written = op.input[1]
                elif op.f in _WRITES:
                    written = op.input
                else:
                    continue
                if not isinstance(_kv_norm(written), str):
                    return None
        found: list[Operation] = []
        for op in ops:
            if op.f in _READS and op.status == "ok":
                seen = _kv_norm(op.output)
            elif op.f == "cas":
                seen = _kv_norm(op.input[0])
            else:
                continue
            observes = not isinstance(seen, str) or (
                effect in seen if info.f == "append" else seen.startswith(effect)
            )
            if observes and op.status != "ok":
                return None  # an info cas may observe it and never be placed
            if observes:
                found.append(op)
        return found

    def describe_op(self, op: Operation) -> str:
        """``get k -> v``, ``put k v``, ``append k v`` or ``cas k old -> new``."""
        suffix = "" if op.status == "ok" else " (info)"
        if op.f in _READS:
            result = repr(op.output) if op.status == "ok" else "?"
            return f"{op.f} {op.key!r} -> {result}{suffix}"
        if op.f == "cas":
            old, new = op.input
            return f"cas {op.key!r} {old!r} -> {new!r}{suffix}"
        return f"{op.f} {op.key!r} {op.input!r}{suffix}"

    def describe_state(self, state: Any) -> str:
        """``{key: value, ...}`` of the written keys (``{}`` when none)."""
        return "{" + ", ".join(f"{k!r}: {v!r}" for k, v in state) + "}"


_REGISTRY: dict[str, Model] = {}


def register_model(model: Model, *, replace: bool = False) -> None:
    """Make ``model`` available to :func:`get_model` (and the CLI) under ``model.name``.

    Raises :class:`ValueError` if another model already has that name, unless
    ``replace`` is true.
    """
    if not isinstance(model, Model):
        raise TypeError(f"register_model needs a Model instance, got {model!r}")
    name = model.name
    if not isinstance(name, str) or not name:
        raise ValueError("a model needs a non-empty string name")
    existing = _REGISTRY.get(name)
    if existing is not None and existing is not model and not replace:
        raise ValueError(f"a model named {name!r} is already registered")
    _REGISTRY[name] = model


def get_model(name: str) -> Model:
    """Return the registered model called ``name`` or raise :class:`UnknownModelError`."""
    model = _REGISTRY.get(name)
    if model is None:
        raise UnknownModelError(name)
    return model


def model_names() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(_REGISTRY)


register_model(RegisterModel())
register_model(KVModel())
