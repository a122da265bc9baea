"""Local clusters: start every node of a spec as a process, show their status, stop them.

``cluster up FILE`` starts ``ruflo-consensus node --spec FILE --id N`` for each node (or
only the ``--only`` ones), each with its log in ``RUN_DIR/logs/N.log``, records the
process ids in ``RUN_DIR/cluster.json`` and waits until every node answers a status
request. Missing key files (of nodes, and of ``[[clients]]`` with a ``key_file``) are
generated first. ``cluster status FILE`` asks every node
(in parallel) for its role, term, commit index and link health. ``cluster down`` sends
SIGTERM, waits, then SIGKILLs what is left; it only signals processes whose command line
is still a ruflo-consensus node, so a recycled process id is never hit.

``cluster add FILE NODE`` (:func:`add_member`) adds a node of the spec — typically a spare
(``join = true``), which ``cluster up`` started and which waits to be added — as a learner,
waits until it has caught up and promotes it; ``cluster remove FILE NODE``
(:func:`remove_member`) removes a voter (the leader too) or a learner.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from ..identity import (
    IdentityError,
    NodeIdentity,
    keygen,
    load_key_file,
    load_manifest,
    manifest_path,
)
from .client import ClientError, ClusterClient
from .spec import ClusterSpec, load_spec

__all__ = [
    "ClusterError",
    "MembershipError",
    "add_member",
    "check_keys",
    "cluster_down",
    "cluster_status",
    "cluster_up",
    "default_run_dir",
    "gather_status",
    "leader_of",
    "membership_roles",
    "node_command",
    "read_state",
    "remove_member",
]


class ClusterError(Exception):
    """A cluster could not be started or stopped as asked.

    ``exit_code`` is the command line's for it: 3 (unavailable: nodes did not start or
    answer) unless said otherwise — 1 for a ``down`` that found nothing to stop, 2 when a
    node refused to start on bad input (its key file, its spec).
    """

    def __init__(self, message: str, exit_code: int = 3) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def default_run_dir(spec_path: str | Path) -> Path:
    """Where ``cluster up`` keeps logs and pids by default: ``.ruflo-cluster/<spec name>``
    in the spec's folder — it follows the spec, not the current folder, so ``down`` and
    ``up --only`` find it from anywhere."""
    p = Path(spec_path).resolve()
    return p.parent / ".ruflo-cluster" / p.stem


def node_command(
    spec_path: str | Path, node_id: str, machine: str = "kv", *, rejoin: bool = False
) -> list[str]:
    """The command line that runs one node of a spec."""
    return [
        sys.executable,
        "-m",
        "ruflo_consensus.runtime.process",  # = `ruflo-consensus node`, with a lighter start
        "--spec",
        str(Path(spec_path).resolve()),
        "--id",
        node_id,
        "--machine",
        machine,
        *(["--rejoin"] if rejoin else []),
    ]


def read_state(run_dir: str | Path) -> dict[str, Any]:
    """The ``cluster.json`` of a run folder (``{"spec": …, "pids": {node: pid}}``)."""
    path = Path(run_dir) / "cluster.json"
    try:
        data = json.loads(path.read_text())
    except OSError:
        return {"spec": None, "pids": {}}
    except ValueError as exc:
        raise ClusterError(f"{path}: not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("pids"), dict):
        raise ClusterError(f"{path}: not a cluster state file")
    return data


def _write_state(run_dir: Path, state: dict[str, Any]) -> None:
    tmp = run_dir / "cluster.json.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(run_dir / "cluster.json")


def _is_our_node(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True  # no /proc: trust the pid file
    return b"ruflo_consensus" in cmdline and b"--spec" in cmdline


def _alive(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    return _is_our_node(pid)


def ensure_keys(spec: ClusterSpec) -> list[str]:
    """Generate node and client key files that do not exist yet; return the ids made."""
    made = []
    wanted: list[tuple[str, Path | None]] = [(n, spec.key_files[n]) for n in spec.ids]
    wanted += [(c.id, c.key_file) for c in spec.clients.values() if c.public_key is None]
    for owner, key in wanted:
        if key is not None and not key.exists() and not manifest_path(key).exists():
            keygen(owner, key)
            made.append(owner)
    return made


def check_keys(spec: ClusterSpec, nodes: list[str]) -> None:
    """Load what ``cluster up`` and its probes need before anything starts: the key file of
    each of ``nodes``, every node's manifest and the default client key.

    Raises :class:`~ruflo_consensus.identity.IdentityError` (a key file others can read,
    a manifest that does not verify, …) naming the file: a node would refuse to start on
    it, and a client key that cannot be loaded would make every probe fail.
    """
    from .client import default_client_identity

    for node_id in nodes:
        load_key_file(spec.key_files[node_id], node_id)
    for node_id in spec.ids:
        load_manifest(spec.manifest_file(node_id), node_id)
    default_client_identity(spec)


def cluster_up(
    spec_path: str | Path,
    run_dir: str | Path | None = None,
    *,
    only: list[str] | None = None,
    machine: str = "kv",
    wait_s: float = 30.0,
    rejoin: bool = False,
) -> dict[str, int]:
    """Start the spec's nodes (or ``only`` those) as processes; return ``{node: pid}``.

    ``rejoin`` starts a node that lost its saved state as a spare (``node --rejoin``)
    instead of letting it refuse to start; use it after ``cluster remove``.

    Nodes already running from this run folder are left alone. Key files are checked
    first (:func:`check_keys`): a bad one starts nothing. When a node exits during
    start-up or does not answer within ``wait_s`` seconds, every node this call started is
    stopped again and :class:`ClusterError` says which node failed, with the one line of
    its log (from this start, not earlier runs) that says why; its ``exit_code`` is 2 when
    the node refused its input (exit code 2), else 3.
    """
    spec = load_spec(spec_path)
    folder = Path(run_dir) if run_dir is not None else default_run_dir(spec_path)
    wanted = only or spec.ids
    for node_id in wanted:
        spec.check_node(node_id)
    ensure_keys(spec)
    check_keys(spec, wanted)
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    state = read_state(folder)
    state["spec"] = str(Path(spec_path).resolve())
    pids: dict[str, int] = {k: int(v) for k, v in state["pids"].items()}
    started: dict[str, subprocess.Popen[bytes]] = {}
    log_start: dict[str, int] = {}
    try:
        for node_id in wanted:
            if node_id in pids and _alive(pids[node_id]):
                continue
            log_path = folder / "logs" / f"{node_id}.log"
            log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
            try:
                log_start[node_id] = log.tell()
                proc = subprocess.Popen(
                    node_command(spec_path, node_id, machine, rejoin=rejoin),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            finally:
                log.close()
            started[node_id] = proc
            pids[node_id] = proc.pid
        state["pids"] = pids
        _write_state(folder, state)
        _wait_started(spec, folder, started, log_start, wait_s)
    except BaseException:
        _stop_started(started)
        for node_id in started:
            pids.pop(node_id, None)
        state["pids"] = pids
        _write_state(folder, state)
        raise
    return {n: pids[n] for n in wanted}


def _wait_started(
    spec: ClusterSpec,
    folder: Path,
    started: dict[str, subprocess.Popen[bytes]],
    log_start: dict[str, int],
    wait_s: float,
) -> None:
    """Wait until every started node answers; :class:`ClusterError` when one cannot."""
    others = len(started) - 1
    stopped = f"; stopped the {others} other node(s) this start began" if others > 0 else ""
    deadline = time.monotonic() + wait_s
    waiting = set(started)
    while waiting:
        for node_id in sorted(waiting):
            proc = started[node_id]
            if proc.poll() is not None:
                log_path = folder / "logs" / f"{node_id}.log"
                why = _cause(log_path, log_start[node_id])
                raise ClusterError(
                    f"{node_id} exited with code {proc.returncode}: {why} (log {log_path})"
                    f"{stopped}",
                    exit_code=2 if proc.returncode == 2 else 3,
                )
        ready = {n for n in waiting if _answers(spec, n)}
        waiting -= ready
        if waiting and time.monotonic() > deadline:
            late = sorted(waiting)
            log_path = folder / "logs" / f"{late[0]}.log"
            why = _cause(log_path, log_start[late[0]])
            raise ClusterError(
                f"{', '.join(late)} did not answer in {wait_s} s: {why} (log {log_path})"
                + (f"; stopped the {len(started)} node(s) this start began" if started else "")
            )
        if waiting:
            time.sleep(0.05)


def _stop_started(started: dict[str, subprocess.Popen[bytes]], grace_s: float = 5.0) -> None:
    """Stop the processes a failed ``cluster up`` started: SIGTERM, then SIGKILL."""
    for proc in started.values():
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + grace_s
    for proc in started.values():
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _cause(path: Path, start: int) -> str:
    """The line of a node's log, written since ``start``, that says why it stopped: its
    last ``error`` line, else its last line (``no output`` when it wrote nothing)."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
    except OSError:
        return "no log"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return "no output"
    errors = [ln for ln in lines if "error" in ln.lower()]
    line = (errors or lines)[-1]
    return line if len(line) <= 600 else line[:597] + "..."


def _answers(spec: ClusterSpec, node_id: str) -> bool:
    async def probe() -> bool:
        try:
            await ClusterClient(spec, node_id, only=True).call("status", timeout=1.0)
        except ClientError as exc:
            return exc.code == "UNAUTHENTICATED"  # it is up, it just does not know our key
        except IdentityError:
            raise  # our own key cannot be loaded: no probe can ever succeed
        except Exception:
            return False
        return True

    return trio.run(probe)


def cluster_status(
    spec_path: str | Path, timeout: float = 2.0, *, identity: NodeIdentity | None = None
) -> list[dict[str, Any]]:
    """Ask every node for its status, in parallel; an unreachable node gets ``error``.

    Requests are signed with ``identity`` (default: the spec's client key file).
    """
    spec = load_spec(spec_path)
    return trio.run(lambda: gather_status(spec, timeout, identity=identity))


async def gather_status(
    spec: ClusterSpec, timeout: float = 2.0, *, identity: NodeIdentity | None = None
) -> list[dict[str, Any]]:
    """Every node's status (in spec order, asked in parallel); ``error`` where none came."""
    results: dict[str, dict[str, Any]] = {}

    async def one(node_id: str) -> None:
        try:
            client = ClusterClient(spec, node_id, only=True, identity=identity)
            _, status = await client.call("status", timeout)
            results[node_id] = status
        except Exception as exc:
            results[node_id] = {"id": node_id, "error": str(exc)[:120]}

    async with trio.open_nursery() as nursery:
        for node_id in spec.ids:
            nursery.start_soon(one, node_id)
    return [results[n] for n in spec.ids]


def leader_of(statuses: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The status of the node that leads in the highest term among ``statuses``, or None."""
    leaders = [s for s in statuses if "error" not in s and s.get("role") == "leader"]
    return max(leaders, key=lambda s: s["term"]) if leaders else None


def membership_roles(statuses: list[dict[str, Any]]) -> dict[str, str]:
    """Each node's membership role — ``voter``, ``learner`` or ``none`` — as the leader's
    configuration says (a node's own view may lag: a removed node is often not told);
    without a leader, as each node says itself (``?`` for a node that did not answer)."""
    leader = leader_of(statuses)
    roles = {}
    for s in statuses:
        if leader is not None and "voters" in leader:
            node = s["id"]
            roles[node] = (
                "voter"
                if node in leader["voters"]
                else "learner"
                if node in leader["learners"]
                else "none"
            )
        else:
            roles[s["id"]] = str(s.get("member", "?"))
    return roles


class MembershipError(ClusterError):
    """A membership change was refused (``reason``: the core's) or did not finish in time."""

    def __init__(self, reason: str, message: str) -> None:
        what = "failed" if reason in ("timeout", "unavailable") else "refused"
        super().__init__(f"membership change {what} ({reason}): {message}", 1)
        self.reason = reason


async def _leader_status(
    spec: ClusterSpec, identity: NodeIdentity | None, timeout: float
) -> dict[str, Any]:
    """The leader's status, waiting (polling every node) until one leads."""
    with trio.move_on_after(timeout):
        while True:
            leader = leader_of(await gather_status(spec, min(timeout, 2.0), identity=identity))
            if leader is not None:
                return leader
            await trio.sleep(0.1)
    raise MembershipError("timeout", f"no leader answered within {timeout} s")


async def _change(
    spec: ClusterSpec,
    identity: NodeIdentity | None,
    leader: str,
    kind: str,
    node: str,
    timeout: float,
) -> dict[str, Any]:
    """One change, asked of ``leader`` first (any node forwards it); typed errors."""
    client = ClusterClient(spec, leader, identity=identity)
    try:
        return await client.change_membership(kind, node, max(timeout, 0.1))
    except ClientError as exc:
        if exc.code == "REFUSED":
            raise MembershipError(exc.reason or "refused", exc.message) from None
        raise MembershipError(exc.code.lower(), exc.message) from None


async def add_member(
    spec: ClusterSpec,
    node: str,
    *,
    timeout: float = 60.0,
    identity: NodeIdentity | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Add ``node`` (a node of the spec, typically a spare) as a voter; the new configuration.

    Adds it as a learner (unless it already is one: an interrupted ``add`` resumes), waits
    until the leader has replicated to within ``max_learner_lag`` entries of its log —
    calling ``on_progress(replicated, leader_last_index)`` on the way — and promotes it.
    Raises :class:`MembershipError` when a change is refused (``reason``, e.g.
    ``already-member``) or the whole operation takes longer than ``timeout`` seconds.
    """
    spec.check_node(node)
    deadline = trio.current_time() + timeout

    def left() -> float:
        return deadline - trio.current_time()

    with trio.move_on_after(timeout):
        st = await _leader_status(spec, identity, left())
        if node in st.get("voters", ()):
            raise MembershipError("already-member", f"{node} is already a voter")
        if node not in st.get("learners", ()):
            await _change(spec, identity, st["id"], "add-learner", node, left())
        while True:
            st = await _leader_status(spec, identity, left())
            if node in st.get("voters", ()):
                return {k: st[k] for k in ("voters", "learners", "conf_index", "conf_committed")}
            if node not in st.get("learners", ()):
                raise MembershipError("unknown-node", f"{node} is no longer a learner")
            match, last = int(st.get("progress", {}).get(node, 0)), int(st["last_index"])
            if on_progress is not None:
                on_progress(match, last)
            if last - match <= spec.raft.max_learner_lag:
                try:
                    return await _change(spec, identity, st["id"], "promote-learner", node, left())
                except MembershipError as exc:
                    if exc.reason not in ("learner-behind", "not-leader", "unavailable"):
                        raise
            await trio.sleep(0.2)
    raise MembershipError("timeout", f"{node} was not added within {timeout} s")


async def remove_member(
    spec: ClusterSpec,
    node: str,
    *,
    timeout: float = 30.0,
    identity: NodeIdentity | None = None,
) -> dict[str, Any]:
    """Remove ``node`` — a voter (the leader included) or a learner; the new configuration.

    Raises :class:`MembershipError` when refused (``unknown-node`` for a node that is
    not a member, ``no-voters`` for the last voter, …) or not done within ``timeout``.
    """
    spec.check_node(node)
    deadline = trio.current_time() + timeout
    with trio.move_on_after(timeout):
        st = await _leader_status(spec, identity, timeout)
        kind = "remove-learner" if node in st.get("learners", ()) else "remove-voter"
        return await _change(spec, identity, st["id"], kind, node, deadline - trio.current_time())
    raise MembershipError("timeout", f"{node} was not removed within {timeout} s")


def cluster_down(run_dir: str | Path, *, grace_s: float = 5.0) -> dict[str, str]:
    """Stop every process recorded in the run folder; ``{node: how it ended}``."""
    folder = Path(run_dir)
    state = read_state(folder)
    outcome: dict[str, str] = {}
    live: dict[str, int] = {}
    for node_id, pid in state["pids"].items():
        if _alive(int(pid)):
            os.kill(int(pid), signal.SIGTERM)
            live[node_id] = int(pid)
        else:
            outcome[node_id] = "not running"
    deadline = time.monotonic() + grace_s
    while live and time.monotonic() < deadline:
        for node_id, pid in list(live.items()):
            if not _alive(pid):
                outcome[node_id] = "stopped"
                del live[node_id]
        time.sleep(0.05)
    for node_id, pid in live.items():
        os.kill(pid, signal.SIGKILL)
        outcome[node_id] = "killed"
    state["pids"] = {}
    if folder.exists():
        _write_state(folder, state)
    return dict(sorted(outcome.items()))
