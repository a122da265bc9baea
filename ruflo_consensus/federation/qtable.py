"""The router's shared Q-table: one replicated table that every node learns into.

Actions are agent types (8 by default: coder, tester, reviewer, architect, researcher,
optimizer, debugger, documenter). Defaults from the spec: learning rate alpha = 0.1, discount
gamma = 0.99, ε decaying linearly from 1.0 to 0.01 over 10,000 updates, at most 10,000 states;
when a new state arrives at a full table the least recently updated states are dropped until
80 % remain. Update (reward in [-1, 1], ``Q(s') = 0`` for an unknown or absent ``s'``)::

    Q(s, a) ← Q(s, a) + alpha · (r + gamma · max Q(s') - Q(s, a))

Under a totally ordered backend (Raft, PBFT) :class:`QTable` applies updates in log order.
:class:`MergeableQTable` is the CRDT form: each node keeps, per state and action, the sum of
the deltas it applied and how many; the table is the per-node sums added in node order, and
merging keeps, per node, the entry with the larger count (a join-semilattice).

Selection (ε-greedy with an injected, seeded ``random.Random``) and nearest-neighbour lookup
(annoy over the states' task embeddings, built with a fixed seed and rebuilt on demand, never
part of the snapshot) are queries, not commands.

Command (``qtable.`` prefix optional)::

    {"op": "update", "state": key, "action": "coder" | 0, "reward": r,
     "next_state": key | None, "embedding": [64 floats] | bytes(float32) | None, "now": t}
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import numpy.typing as npt
from annoy import AnnoyIndex

from ruflo_consensus.canonical import canonical_bytes
from ruflo_consensus.federation.base import PlannedMachine
from ruflo_consensus.federation.errors import BadArgument, BadSnapshot, UnknownOp
from ruflo_consensus.federation.validation import (
    MAX_ID_LEN,
    MAX_NOW_MS,
    Commit,
    check_fields,
    check_number,
    opt_int,
    opt_str,
    parse_command,
    req_number,
    req_str,
)
from ruflo_consensus.federation.wire import (
    decode_snapshot,
    ensure_encodable,
    w_bytes,
    w_choice,
    w_clock,
    w_count,
    w_float,
    w_int,
    w_list,
    w_map,
    w_row,
    w_rows,
    w_text,
)

__all__ = [
    "DEFAULT_AGENT_TYPES",
    "MergeableQTable",
    "QConfig",
    "QTable",
    "epsilon_at",
    "state_key",
    "task_embedding",
]

DEFAULT_AGENT_TYPES: tuple[str, ...] = (
    "coder",
    "tester",
    "reviewer",
    "architect",
    "researcher",
    "optimizer",
    "debugger",
    "documenter",
)
"""The router's 8 actions (spec)."""

FloatArray = npt.NDArray[np.float64]

MAX_ACTIONS = 256
"""Most actions a configuration may have."""
MAX_EMBEDDING_DIM = 4096
"""Widest task embedding a configuration may ask for (rows are allocated at this width)."""
MAX_ABS_Q = 1e15
"""Largest |Q| a snapshot may hold. Updates move Q by at most alpha(1 + gamma|Q'| + |Q|), so
from here on no sum can overflow to infinity (and then to NaN, which has no encoding)."""
_INT32 = 2**31 - 1


@dataclass(frozen=True, slots=True)
class QConfig:
    """Q-learning parameters; the defaults are the spec's."""

    actions: tuple[str, ...] = DEFAULT_AGENT_TYPES
    alpha: float = 0.1
    gamma: float = 0.99
    epsilon_start: float = 1.0
    epsilon_end: float = 0.01
    epsilon_decay_steps: int = 10_000
    max_states: int = 10_000
    evict_to: float = 0.8
    embedding_dim: int = 64
    annoy_trees: int = 10
    annoy_seed: int = 42

    def __post_init__(self) -> None:
        if not self.actions or len(set(self.actions)) != len(self.actions):
            raise ValueError("actions must be a non-empty list of distinct names")
        if not 0 < self.alpha <= 1 or not 0 <= self.gamma <= 1:
            raise ValueError("need 0 < alpha <= 1 and 0 <= gamma <= 1")
        if self.max_states < 1 or not 0 <= self.evict_to < 1:
            raise ValueError("need max_states >= 1 and 0 <= evict_to < 1")
        if self.embedding_dim < 1 or self.epsilon_decay_steps < 1:
            raise ValueError("embedding_dim and epsilon_decay_steps must be positive")
        if self.embedding_dim > MAX_EMBEDDING_DIM or len(self.actions) > MAX_ACTIONS:
            raise ValueError(
                f"at most {MAX_ACTIONS} actions and {MAX_EMBEDDING_DIM} embedding features"
            )
        if self.annoy_trees < 1 or not -_INT32 - 1 <= self.annoy_seed <= _INT32:
            raise ValueError("annoy_trees must be positive and annoy_seed a 32-bit integer")

    def to_wire(self) -> list[Any]:
        """Plain list form (part of snapshots, so a replica cannot silently differ)."""
        return [
            list(self.actions),
            self.alpha,
            self.gamma,
            self.epsilon_start,
            self.epsilon_end,
            self.epsilon_decay_steps,
            self.max_states,
            self.evict_to,
            self.embedding_dim,
            self.annoy_trees,
            self.annoy_seed,
        ]

    @classmethod
    def from_wire(cls, value: Any) -> QConfig:
        """Inverse of :meth:`to_wire`; every field checked, ``BadSnapshot`` otherwise."""
        actions, a, g, es, ee, eds, ms, et, dim, trees, seed = w_row(value, "config", 11)
        names = [w_text(x, "action") for x in w_list(actions, "actions", max_items=MAX_ACTIONS)]
        fields = (
            w_float(a, "alpha", lo=0.0, hi=1.0),
            w_float(g, "gamma", lo=0.0, hi=1.0),
            w_float(es, "epsilon_start", lo=0.0, hi=1.0),
            w_float(ee, "epsilon_end", lo=0.0, hi=1.0),
            w_count(eds, "epsilon_decay_steps"),
            w_int(ms, "max_states", hi=_INT32),
            w_float(et, "evict_to", lo=0.0, hi=1.0),
            w_int(dim, "embedding_dim", hi=MAX_EMBEDDING_DIM),
            w_int(trees, "annoy_trees", hi=_INT32),
            w_int(seed, "annoy_seed", lo=-_INT32 - 1, hi=_INT32),
        )
        try:
            return cls(tuple(names), *fields)
        except ValueError as exc:  # QConfig's own consistency checks
            raise BadSnapshot(f"bad Q-table config: {exc}") from None


def epsilon_at(step: int, config: QConfig) -> float:
    """ε after ``step`` updates: linear from ``epsilon_start`` to ``epsilon_end``."""
    frac = min(1.0, step / config.epsilon_decay_steps)
    return config.epsilon_start + (config.epsilon_end - config.epsilon_start) * frac


_TOKEN = re.compile(r"[a-z0-9]+")


def task_embedding(text: str, dim: int = 64) -> npt.NDArray[np.float32]:
    """A ``dim``-feature hashed bag of words of ``text`` (unit length; zero for no words).

    Uses BLAKE2b, not Python's per-process ``hash``, so every node computes the same vector.
    """
    vec = np.zeros(dim, dtype=np.float64)
    for token in _TOKEN.findall(text.lower()):
        h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
        vec[h % dim] += 1.0 if (h >> 32) & 1 else -1.0
    norm = float(np.sqrt(np.dot(vec, vec)))
    if norm > 0:
        vec /= norm
    return vec.astype(np.float32)


def state_key(embedding: npt.ArrayLike) -> str:
    """The state key of a feature vector: a hash of the vector quantised to 1/1000."""
    arr = np.asarray(embedding, dtype=np.float64)
    quant = np.round(arr * 1000.0).astype("<i4")
    return "s" + hashlib.blake2b(quant.tobytes(), digest_size=8).hexdigest()


def _parse_embedding(value: Any, dim: int, name: str) -> npt.NDArray[np.float32] | None:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        if len(value) != 4 * dim:
            raise BadArgument(f"{name!r} must be {dim} little-endian float32 values")
        arr = np.frombuffer(bytes(value), dtype="<f4").astype(np.float32)
    elif isinstance(value, (list, tuple)):
        if len(value) != dim:
            raise BadArgument(f"{name!r} must be a list of {dim} numbers")
        limit = float(np.finfo(np.float32).max)
        arr = np.asarray(
            [check_number(x, name, lo=-limit, hi=limit) for x in value], dtype=np.float32
        )
    else:
        raise BadArgument(f"{name!r} must be a list of numbers or float32 bytes")
    if not bool(np.all(np.isfinite(arr))):
        raise BadArgument(f"{name!r} must be finite")
    return arr


def _parse_action(value: Any, actions: tuple[str, ...]) -> int:
    if isinstance(value, str):
        if value not in actions:
            raise BadArgument(f"unknown action {value!r}; actions are {list(actions)}")
        return actions.index(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(actions):
        return value
    raise BadArgument(f"'action' must be one of {list(actions)} or an index")


def _greedy(values: FloatArray) -> int:
    """Index of the largest value, the lowest index on ties."""
    return int(np.argmax(values))


class QTable(PlannedMachine):
    """Replicated Q-table for a totally ordered backend (numpy rows, bounded, LRU-updated)."""

    namespace = "qtable"
    ops = ("update",)

    def __init__(self, config: QConfig | None = None) -> None:
        super().__init__()
        self.config = config or QConfig()
        self._reset(0)

    def _reset(self, capacity: int) -> None:
        cfg = self.config
        cap = max(capacity, min(cfg.max_states, 64))
        self.q: FloatArray = np.zeros((cap, len(cfg.actions)), dtype=np.float64)
        self.emb = np.zeros((cap, cfg.embedding_dim), dtype=np.float32)
        self.rows: dict[str, int] = {}
        self.has_emb: dict[str, bool] = {}
        self.updated: dict[str, int] = {}
        self.free: list[int] = list(range(cap - 1, -1, -1))
        self.seq = 0
        self.steps = 0
        self._annoy: Any = None
        self._annoy_keys: list[str] = []

    # ----------------------------------------------------------------- queries

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, key: object) -> bool:
        return key in self.rows

    def states(self) -> list[str]:
        """Known state keys, sorted."""
        return sorted(self.rows)

    def q_values(self, state: str) -> FloatArray:
        """A copy of the row of ``state`` (zeros for an unknown state)."""
        row = self.rows.get(state)
        if row is None:
            return np.zeros(len(self.config.actions), dtype=np.float64)
        return np.array(self.q[row], dtype=np.float64)

    def epsilon(self) -> float:
        """Current exploration rate."""
        return epsilon_at(self.steps, self.config)

    def select(self, state: str, rng: random.Random, epsilon: float | None = None) -> str:
        """ε-greedy action for ``state`` using ``rng`` (a seeded ``random.Random``)."""
        eps = self.epsilon() if epsilon is None else epsilon
        actions = self.config.actions
        if rng.random() < eps:
            return actions[rng.randrange(len(actions))]
        return actions[_greedy(self.q_values(state))]

    def nearest(self, embedding: npt.ArrayLike, k: int = 5) -> list[tuple[str, float]]:
        """Up to ``k`` known states nearest to ``embedding`` (annoy, angular distance)."""
        vec = np.asarray(embedding, dtype=np.float32)
        if vec.shape != (self.config.embedding_dim,):
            raise ValueError(f"embedding must have {self.config.embedding_dim} values")
        index = self._index()
        if index is None or k <= 0:
            return []
        ids, dists = index.get_nns_by_vector(vec.tolist(), k, include_distances=True)
        return [(self._annoy_keys[i], float(d)) for i, d in zip(ids, dists, strict=True)]

    def suggest(
        self,
        embedding: npt.ArrayLike,
        rng: random.Random,
        k: int = 5,
        epsilon: float | None = None,
    ) -> tuple[str, list[tuple[str, float]]]:
        """Pick an agent for an unseen task: ε-greedy over the mean Q of its nearest states."""
        candidates = self.nearest(embedding, k)
        eps = self.epsilon() if epsilon is None else epsilon
        actions = self.config.actions
        if rng.random() < eps or not candidates:
            return actions[rng.randrange(len(actions))], candidates
        mean = np.mean([self.q_values(key) for key, _ in candidates], axis=0)
        return actions[_greedy(mean)], candidates

    def _index(self) -> Any:
        if self._annoy is not None:
            return self._annoy
        keys = [k for k in sorted(self.rows) if self.has_emb.get(k)]
        if not keys:
            return None
        index = AnnoyIndex(self.config.embedding_dim, "angular")
        index.set_seed(self.config.annoy_seed)
        for i, key in enumerate(keys):
            index.add_item(i, self.emb[self.rows[key]].tolist())
        index.build(self.config.annoy_trees, n_jobs=1)
        self._annoy, self._annoy_keys = index, keys
        return index

    # ------------------------------------------------------------------ plans

    def _plan_update(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(cmd, ("state", "action", "reward", "next_state", "embedding"))
        state = req_str(cmd, "state", max_len=MAX_ID_LEN)
        action = _parse_action(cmd.get("action"), self.config.actions)
        reward = req_number(cmd, "reward", lo=-1.0, hi=1.0)
        next_state = opt_str(cmd, "next_state", max_len=MAX_ID_LEN)
        embedding = _parse_embedding(cmd.get("embedding"), self.config.embedding_dim, "embedding")
        return lambda: self.td_update(state, action, reward, next_state, embedding)

    def td_update(
        self,
        state: str,
        action: int,
        reward: float,
        next_state: str | None,
        embedding: npt.NDArray[np.float32] | None = None,
    ) -> dict[str, Any]:
        """Apply one validated TD update (no checks; used by commits)."""
        cfg = self.config
        next_max = 0.0
        if next_state is not None and next_state in self.rows:
            next_max = float(np.max(self.q[self.rows[next_state]]))
        evicted = 0
        if state not in self.rows:
            evicted = self._make_room()
            self.rows[state] = self._take_row()
            self.q[self.rows[state]] = 0.0
            self.has_emb[state] = False
        row = self.rows[state]
        old = float(self.q[row, action])
        new = old + cfg.alpha * (reward + cfg.gamma * next_max - old)
        self.q[row, action] = new
        if embedding is not None:
            self.emb[row] = embedding
            self.has_emb[state] = True
            self._annoy = None
        self.seq += 1
        self.steps += 1
        self.updated[state] = self.seq
        if evicted:
            self._annoy = None
        return {
            "state": state,
            "action": cfg.actions[action],
            "q": new,
            "epsilon": self.epsilon(),
            "evicted": evicted,
        }

    def _take_row(self) -> int:
        if not self.free:
            old_cap = self.q.shape[0]
            new_cap = min(self.config.max_states, old_cap * 2)
            new_cap = max(new_cap, old_cap + 1)
            self.q = np.vstack([self.q, np.zeros((new_cap - old_cap, self.q.shape[1]))])
            self.emb = np.vstack(
                [self.emb, np.zeros((new_cap - old_cap, self.emb.shape[1]), dtype=np.float32)]
            )
            self.free = list(range(new_cap - 1, old_cap - 1, -1))
        return self.free.pop()

    def _make_room(self) -> int:
        cfg = self.config
        if len(self.rows) < cfg.max_states:
            return 0
        keep = math.floor(cfg.max_states * cfg.evict_to)
        victims = sorted(self.rows, key=lambda k: (self.updated[k], k))[: len(self.rows) - keep]
        for key in victims:
            row = self.rows.pop(key)
            self.q[row] = 0.0
            self.emb[row] = 0.0
            del self.updated[key]
            del self.has_emb[key]
            self.free.append(row)
        self.free.sort(reverse=True)
        return len(victims)

    # ------------------------------------------------------- snapshot/restore

    def to_wire(self) -> dict[str, Any]:
        """Plain map form: rows in sorted key order, arrays as little-endian bytes."""
        keys = sorted(self.rows)
        idx = [self.rows[k] for k in keys]
        q = np.ascontiguousarray(self.q[idx], dtype="<f8")
        emb_keys = [k for k in keys if self.has_emb[k]]
        emb = np.ascontiguousarray(self.emb[[self.rows[k] for k in emb_keys]], dtype="<f4")
        return {
            "config": self.config.to_wire(),
            "clock": self.clock,
            "seq": self.seq,
            "steps": self.steps,
            "keys": keys,
            "updated": [self.updated[k] for k in keys],
            "q": {"dtype": "<f8", "shape": list(q.shape), "data": q.tobytes()},
            "emb_keys": emb_keys,
            "emb": {"dtype": "<f4", "shape": list(emb.shape), "data": emb.tobytes()},
        }

    def _blank(self) -> Self:
        return type(self)(self.config)

    def _read_wire(self, value: Any) -> None:
        wire = w_map(
            value,
            "qtable",
            ("config", "clock", "seq", "steps", "keys", "updated", "q", "emb_keys", "emb"),
        )
        config = QConfig.from_wire(wire["config"])
        keys = _distinct_keys(wire["keys"], "keys", config.max_states)
        updated = [w_count(u, "updated") for u in w_list(wire["updated"], "updated")]
        if len(updated) != len(keys):
            raise BadSnapshot("'updated' must have one entry per key")
        q = _read_array(wire["q"], "q", "<f8", (len(keys), len(config.actions)))
        if float(np.max(np.abs(q), initial=0.0)) > MAX_ABS_Q:
            raise BadSnapshot(f"Q values must be within +-{MAX_ABS_Q}")
        emb_keys = _distinct_keys(wire["emb_keys"], "emb_keys", config.max_states)
        if not set(emb_keys) <= set(keys):
            raise BadSnapshot("embeddings of unknown states")
        emb = _read_array(wire["emb"], "emb", "<f4", (len(emb_keys), config.embedding_dim))
        self.config = config
        self._reset(len(keys))
        self.clock = w_clock(wire["clock"])
        self.seq, self.steps = w_count(wire["seq"], "seq"), w_count(wire["steps"], "steps")
        emb_row = {k: i for i, k in enumerate(emb_keys)}
        for key, u, row_q in zip(keys, updated, q, strict=True):
            row = self._take_row()
            self.rows[key] = row
            self.q[row] = row_q
            self.updated[key] = u
            self.has_emb[key] = key in emb_row
            if key in emb_row:
                self.emb[row] = emb[emb_row[key]]


def _distinct_keys(value: Any, name: str, max_items: int) -> list[str]:
    keys = [w_text(k, name) for k in w_list(value, name, max_items=max_items)]
    if len(set(keys)) != len(keys):
        raise BadSnapshot(f"{name!r} has duplicates")
    return keys


def _read_array(value: Any, name: str, dtype: str, shape: tuple[int, int]) -> Any:
    """A finite little-endian array of exactly ``shape`` (sizes checked before any copy)."""
    wire = w_map(value, name, ("dtype", "shape", "data"))
    w_choice(wire["dtype"], f"{name} dtype", (dtype,))
    rows, cols = (w_count(x, f"{name} shape") for x in w_row(wire["shape"], f"{name} shape", 2))
    if (rows, cols) != shape:
        raise BadSnapshot(f"{name!r} must have shape {list(shape)}")
    item = np.dtype(dtype).itemsize
    data = w_bytes(wire["data"], f"{name} data", length=rows * cols * item, max_len=2**62)
    arr = np.frombuffer(data, dtype=dtype).reshape(shape)
    if not bool(np.all(np.isfinite(arr))):
        raise BadSnapshot(f"{name!r} must be finite")
    return arr


class MergeableQTable:
    """CRDT form of the Q-table: per-node delta sums and counts, merged per node by count.

    ``Q(s, a) = Σ_node sums[s][node][a]`` (summed in sorted node order, so the float result
    does not depend on merge order). A node only ever grows its own entries, so merging keeps
    the entry with the larger ``(count, sum)`` — commutative, associative and idempotent.
    Commands: ``{"op": "update", "node": n, "state": s, "action": a, "reward": r,
    "next_state": s2?}`` and ``{"op": "merge", "state": <snapshot bytes of another replica>}``.
    Bounded eviction is not applied here: removing a state safely under concurrency needs
    causal tombstones, which the CRDT backend will bring.
    """

    namespace = "qtable"

    def __init__(self, config: QConfig | None = None) -> None:
        self.config = config or QConfig()
        self.entries: dict[str, dict[str, tuple[list[int], list[float]]]] = {}

    def q_values(self, state: str) -> FloatArray:
        """The merged row of ``state`` (zeros when unknown)."""
        n = len(self.config.actions)
        total = [0.0] * n
        for node in sorted(self.entries.get(state, {})):
            _, sums = self.entries[state][node]
            for i in range(n):
                total[i] += sums[i]
        return np.array(total, dtype=np.float64)

    def update(
        self, node: str, state: str, action: int, reward: float, next_state: str | None
    ) -> float:
        """Apply a TD update as ``node``: add alpha(r + gamma max Q(s') - Q(s, a)) to its entry."""
        cfg = self.config
        next_max = 0.0
        if next_state is not None and next_state in self.entries:
            next_max = float(np.max(self.q_values(next_state)))
        old = float(self.q_values(state)[action])
        delta = cfg.alpha * (reward + cfg.gamma * next_max - old)
        per_node = self.entries.setdefault(state, {})
        counts, sums = per_node.get(node, ([0] * len(cfg.actions), [0.0] * len(cfg.actions)))
        counts, sums = list(counts), list(sums)
        counts[action] += 1
        sums[action] += delta
        per_node[node] = (counts, sums)
        return old + delta

    def merge(self, other: MergeableQTable) -> None:
        """Join ``other`` into this table (per node and action, the larger (count, sum) wins)."""
        if other.config.actions != self.config.actions:
            raise ValueError("cannot merge tables with different actions")
        for state, nodes in other.entries.items():
            mine = self.entries.setdefault(state, {})
            for node, (ocounts, osums) in nodes.items():
                counts, sums = mine.get(node, ([0] * len(ocounts), [0.0] * len(ocounts)))
                counts, sums = list(counts), list(sums)
                for i in range(len(ocounts)):
                    if (ocounts[i], osums[i]) > (counts[i], sums[i]):
                        counts[i], sums[i] = ocounts[i], osums[i]
                mine[node] = (counts, sums)

    def apply(self, command: Any) -> Any:
        """Apply ``update`` or ``merge``; raise a typed error for a bad command."""
        cmd, op = parse_command(command, self.namespace)
        opt_int(cmd, "now", 0, hi=MAX_NOW_MS)  # no clock here, but a given ``now`` is checked
        opt_str(cmd, "node")
        if op == "update":
            check_fields(cmd, ("state", "action", "reward", "next_state"))
            node = req_str(cmd, "node")
            state = req_str(cmd, "state")
            action = _parse_action(cmd.get("action"), self.config.actions)
            reward = req_number(cmd, "reward", lo=-1.0, hi=1.0)
            next_state = opt_str(cmd, "next_state")
            return {"state": state, "q": self.update(node, state, action, reward, next_state)}
        if op == "merge":
            check_fields(cmd, ("state",))
            data = cmd.get("state")
            if not isinstance(data, bytes):
                raise BadArgument("'state' must be snapshot bytes")
            other = MergeableQTable(self.config)
            other.restore(data)
            self.merge(other)
            return {"states": len(self.entries)}
        raise UnknownOp(f"mergeable Q-table has no op {op!r}")

    def snapshot(self) -> bytes:
        """Canonical bytes (sorted states and nodes)."""
        return canonical_bytes(
            {
                "actions": list(self.config.actions),
                "entries": [
                    [s, [[n, c, v] for n, (c, v) in sorted(self.entries[s].items())]]
                    for s in sorted(self.entries)
                ],
            }
        )

    def restore(self, data: bytes) -> None:
        """Load a snapshot made by :meth:`snapshot`; a bad one raises BadSnapshot, unchanged."""
        self.load_wire(decode_snapshot(data, "mergeable Q-table"))

    def load_wire(self, value: Any) -> None:
        """Replace the entries with those of a decoded snapshot: validate all, then swap."""
        wire = w_map(value, "mergeable Q-table", ("actions", "entries"))
        actions = [w_text(a, "action") for a in w_list(wire["actions"], "actions")]
        if tuple(actions) != self.config.actions:
            raise BadSnapshot("the snapshot's actions differ from this table's")
        n = len(actions)
        entries: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
        for state, nodes in w_rows(wire["entries"], "entries", 2):
            key = w_text(state, "state")
            if key in entries:
                raise BadSnapshot(f"state {key!r} appears twice")
            per: dict[str, tuple[list[int], list[float]]] = {}
            for node, counts, sums in w_rows(nodes, "nodes", 3):
                name = w_text(node, "node")
                if name in per:
                    raise BadSnapshot(f"node {name!r} appears twice under {key!r}")
                per[name] = (
                    [w_count(c, "count") for c in w_row(counts, "counts", n)],
                    [
                        w_float(v, "sum", lo=-MAX_ABS_Q, hi=MAX_ABS_Q)
                        for v in w_row(sums, "sums", n)
                    ],
                )
            entries[key] = per
        ensure_encodable(entries, "mergeable Q-table")
        self.entries = entries
