"""The validate-then-commit skeleton shared by the federation machines.

A machine splits every command in two: :meth:`PlannedMachine.plan` runs *all* checks and
raises a typed error, or returns a :data:`~ruflo_consensus.federation.validation.Commit`
closure that mutates state and cannot fail. ``apply`` calls the two in turn, so a rejected
command never leaves a half-applied state; :class:`FederationStateMachine` plans several
machines' parts of one command first and commits them only when every plan succeeded.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from ruflo_consensus.canonical import canonical_bytes
from ruflo_consensus.federation.errors import UnknownOp
from ruflo_consensus.federation.validation import Commit, effective_time, opt_str, parse_command
from ruflo_consensus.federation.wire import decode_snapshot, ensure_encodable

__all__ = ["PlannedMachine"]


class PlannedMachine:
    """Base of the standalone federation machines (a :class:`StateMachine` each).

    Subclasses set ``namespace`` and ``ops`` and implement ``_plan_<op>(cmd, t)``;
    :meth:`advance` materialises time-driven transitions (expiries, evictions) after each
    accepted command. For snapshots they implement :meth:`to_wire`, :meth:`_blank` (an empty
    machine with the same configuration) and :meth:`_read_wire` (fill that empty machine
    from a decoded snapshot, raising only ``BadSnapshot``).
    """

    namespace: ClassVar[str] = ""
    ops: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.clock = 0

    def plan(self, op: str, cmd: dict[str, Any], t: int) -> Commit:
        """Validate ``cmd`` (op without namespace) at time ``t``; return its commit closure."""
        if op not in self.ops:
            raise UnknownOp(f"{self.namespace} machine has no op {op!r}")
        planner = getattr(self, f"_plan_{op}")
        commit: Commit = planner(cmd, t)
        return commit

    def advance(self, t: int) -> list[dict[str, Any]]:
        """Apply transitions that became due by time ``t``; return what changed."""
        del t
        return []

    def apply(self, command: Any) -> Any:
        """Apply one command: validate everything, then commit; raise a typed error to reject."""
        cmd, op = parse_command(command, self.namespace)
        if op not in self.ops:
            raise UnknownOp(f"{self.namespace} machine has no op {op!r}")
        t = effective_time(self.clock, cmd)
        opt_str(cmd, "node")
        commit = self.plan(op, cmd, t)
        result = commit()
        self.clock = t
        self.advance(t)
        return result

    # ----------------------------------------------------------------- snapshots

    def to_wire(self) -> Any:
        """The state as plain msgpack-able values (subclasses define it)."""
        raise NotImplementedError

    def _blank(self) -> Self:
        """A new, empty machine with this one's configuration (subclasses define it)."""
        raise NotImplementedError

    def _read_wire(self, value: Any) -> None:
        """Fill this *new* machine from ``value``; raise only ``BadSnapshot``."""
        raise NotImplementedError

    def decoded(self, value: Any) -> Self:
        """A new machine, configured like this one, holding the state ``value`` describes.

        Every field is checked (types, ranges, UTF-8 text, sizes, consistency that later
        commands rely on) and the result must have a canonical encoding; anything else
        raises :class:`BadSnapshot`. This machine is not changed.
        """
        fresh = self._blank()
        fresh._read_wire(value)
        ensure_encodable(fresh.to_wire(), self.namespace)
        return fresh

    def adopt(self, other: Self) -> None:
        """Take over the whole state of ``other`` (made by :meth:`decoded`); cannot fail."""
        vars(self).update(vars(other))

    def load_wire(self, value: Any) -> None:
        """Replace the state with ``value`` from :meth:`to_wire`: validate all, then swap."""
        self.adopt(self.decoded(value))

    def snapshot(self) -> bytes:
        """Canonical bytes of the state: equal states give equal bytes."""
        return canonical_bytes(self.to_wire())

    def restore(self, data: bytes) -> None:
        """Load a snapshot made by :meth:`snapshot`; a bad one raises BadSnapshot, unchanged."""
        self.load_wire(decode_snapshot(data, self.namespace))
