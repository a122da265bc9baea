"""Raft cluster membership: configurations, single-server changes, and the log's history.

The Raft core changes its membership one server at a time (Ongaro's thesis, §4.1): a
configuration entry adds or removes one voter (or a learner, which never votes), so the
majorities of the old and the new configuration always overlap and no two leaders can
be elected in one term. A configuration takes effect on every node as soon as its entry
is in the log — committed or not — and rolls back if that entry is truncated away.

This module holds the parts that do not depend on the rest of the core: the
:class:`Configuration` value, :func:`apply_change` (which refuses what is not a valid
single-server step, with a typed :class:`~ruflo_consensus.core.base.ConfChangeRefused`),
the structural checks of a configuration and of a configuration entry received from the
wire, and :class:`ConfigHistory` — the configuration at the snapshot point plus every
configuration entry after it, which is what truncation and compaction need. The leader's
rules for when a change may be proposed at all are in :mod:`.leader`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..base import ConfChange, ConfChangeKind, ConfChangeRefused, Entry, NodeId

__all__ = [
    "ConfigHistory",
    "Configuration",
    "apply_change",
    "conf_entry_problem",
    "configuration_problem",
]

_KINDS = frozenset(k.value for k in ConfChangeKind)


@dataclass(frozen=True, slots=True)
class Configuration:
    """Who votes (``voters``) and who only receives the log (``learners``)."""

    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...] = ()

    @property
    def quorum(self) -> int:
        """A majority of the voters."""
        return len(self.voters) // 2 + 1

    @property
    def members(self) -> tuple[NodeId, ...]:
        """Voters then learners."""
        return self.voters + self.learners

    def is_voter(self, node: NodeId) -> bool:
        """True when ``node`` votes in this configuration."""
        return node in self.voters

    def is_member(self, node: NodeId) -> bool:
        """True when ``node`` is a voter or a learner."""
        return node in self.voters or node in self.learners

    @classmethod
    def of(cls, change: ConfChange) -> Configuration:
        """The configuration a change entry results in."""
        return cls(change.voters, change.learners)


def configuration_problem(voters: tuple[NodeId, ...], learners: tuple[NodeId, ...]) -> str | None:
    """What is structurally wrong with a configuration (None: nothing).

    At least one voter, no node listed twice, no node both voter and learner, every id a
    non-empty string.
    """
    if not voters:
        return "a configuration needs at least one voter"
    everyone = voters + learners
    if not all(isinstance(n, str) and n for n in everyone):
        return "node ids must be non-empty strings"
    if len(set(everyone)) != len(everyone):
        return f"a node is listed twice in voters {list(voters)!r} / learners {list(learners)!r}"
    return None


def conf_entry_problem(e: Entry) -> str | None:
    """What is wrong with configuration entry ``e`` from the wire (None: nothing)."""
    c = e.conf
    assert c is not None
    problem = configuration_problem(c.voters, c.learners)
    if e.proposal is not None:
        problem = "an entry carries either a proposal or a configuration"
    elif not isinstance(c.kind, ConfChangeKind | str) or c.kind not in _KINDS:
        problem = f"unknown change kind {c.kind!r}"
    return problem


def apply_change(conf: Configuration, kind: ConfChangeKind | str, node: NodeId) -> ConfChange:
    """The change entry that makes ``kind`` of ``node`` to ``conf``; refuse an invalid one.

    Raises :class:`~ruflo_consensus.core.base.ConfChangeRefused` with reason
    ``bad-kind``, ``bad-node``, ``already-member``, ``unknown-node`` (not a voter/learner
    as the kind needs) or ``no-voters`` (removing the last voter).
    """
    try:
        kind = ConfChangeKind(kind)
    except ValueError:
        choices = ", ".join(k.value for k in ConfChangeKind)
        raise ConfChangeRefused("bad-kind", f"{kind!r} is not one of {choices}") from None
    if not isinstance(node, str) or not node or len(node) > 256:
        raise ConfChangeRefused("bad-node", "a node id is a non-empty string (≤ 256 chars)")
    voters, learners = conf.voters, conf.learners
    if kind in (ConfChangeKind.ADD_LEARNER, ConfChangeKind.ADD_VOTER):
        if conf.is_member(node):
            role = "voter" if conf.is_voter(node) else "learner"
            raise ConfChangeRefused("already-member", f"{node} is already a {role}")
        if kind is ConfChangeKind.ADD_LEARNER:
            learners = (*learners, node)
        else:
            voters = (*voters, node)
    elif kind in (ConfChangeKind.PROMOTE_LEARNER, ConfChangeKind.REMOVE_LEARNER):
        if node not in learners:
            raise ConfChangeRefused("unknown-node", f"{node} is not a learner")
        learners = tuple(n for n in learners if n != node)
        if kind is ConfChangeKind.PROMOTE_LEARNER:
            voters = (*voters, node)
    else:  # REMOVE_VOTER
        if node not in voters:
            raise ConfChangeRefused("unknown-node", f"{node} is not a voter")
        if len(voters) == 1:
            raise ConfChangeRefused("no-voters", f"removing {node} would leave no voters")
        voters = tuple(n for n in voters if n != node)
    return ConfChange(kind, node, voters, learners)


class ConfigHistory:
    """The configuration at the log's base and every configuration entry after it.

    ``base`` is the configuration as of the snapshot point (or the bootstrap voters
    without a snapshot); ``entries`` lists ``(index, configuration)`` of the
    configuration entries still in the log, in index order. The current configuration
    is the last one.
    """

    __slots__ = ("base", "entries")

    def __init__(self, base: Configuration) -> None:
        """A history with ``base`` in effect and no configuration entries yet."""
        self.base = base
        self.entries: list[tuple[int, Configuration]] = []

    @property
    def current(self) -> Configuration:
        """The configuration in effect: the latest one in the log."""
        return self.entries[-1][1] if self.entries else self.base

    @property
    def current_index(self) -> int:
        """Index of the latest configuration entry (0 when the base is in effect)."""
        return self.entries[-1][0] if self.entries else 0

    def at(self, index: int) -> Configuration:
        """The configuration in effect just after entry ``index``."""
        conf = self.base
        for i, c in self.entries:
            if i > index:
                break
            conf = c
        return conf

    def scan(self, entries: list[Entry] | tuple[Entry, ...]) -> bool:
        """Record the configuration entries among ``entries`` (appended to the log)."""
        found = False
        for e in entries:
            if e.conf is not None:
                self.entries.append((e.index, Configuration.of(e.conf)))
                found = True
        return found

    def truncate_from(self, index: int) -> bool:
        """Forget the configuration entries at ``index`` and after; True if any were."""
        entries = self.entries
        n = len(entries)
        while entries and entries[-1][0] >= index:
            entries.pop()
        return len(entries) != n

    def compact_to(self, index: int, base: Configuration | None = None) -> None:
        """The log now starts after ``index``: fold the entries up to it into the base."""
        new_base = self.at(index) if base is None else base
        self.entries = [(i, c) for i, c in self.entries if i > index]
        self.base = new_base

    def nodes(self) -> set[NodeId]:
        """Every node named in the base or in any configuration entry."""
        out = set(self.base.members)
        for _, c in self.entries:
            out.update(c.members)
        return out
