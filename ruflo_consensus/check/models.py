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
    interpret before searching), :meth:`can_drop` (drop ``info`` ops that constrain
    nothing, such as reads whose result is unknown), and the ``describe_*`` helpers used
    by failure reports.

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

    def can_drop(self, op: Operation) -> bool:
        """True if ``op`` (whose status is ``"info"``) constrains nothing and can be dropped.

        The default keeps every op. Read-only operations with unknown results return True.
        """
        return False

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

    def can_drop(self, op: Operation) -> bool:
        """Reads with unknown results constrain nothing."""
        return op.f in _READS

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

    @staticmethod
    def _get(state: tuple[tuple[Any, Any], ...], key: Any) -> Any:
        for k, v in state:
            if k == key:
                return v
        return ""

    @staticmethod
    def _set(state: tuple[tuple[Any, Any], ...], key: Any, value: Any) -> Hashable:
        for i, (k, _) in enumerate(state):
            if k == key:
                return (*state[:i], (key, value), *state[i + 1 :])
        return (*state, (key, value))

    def step(self, state: Any, op: Operation) -> tuple[bool, Hashable]:
        """Apply one get / put / append / cas to the map ``state``."""
        f = op.f
        key = op.key
        if f in _READS:
            return (op.status != "ok" or _kv_norm(op.output) == self._get(state, key)), state
        if f in _WRITES:
            return True, self._set(state, key, _kv_norm(op.input))
        if f == "append":
            current = self._get(state, key)
            if not isinstance(current, str):
                return False, state
            return True, self._set(state, key, current + _kv_norm(op.input))
        old, new = op.input
        if self._get(state, key) == _kv_norm(old):
            return True, self._set(state, key, _kv_norm(new))
        return False, state

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

    def can_drop(self, op: Operation) -> bool:
        """Gets with unknown results constrain nothing."""
        return op.f in _READS

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
