"""Local clusters: start every node of a spec as a process, show their status, stop them.

``cluster up FILE`` starts ``ruflo-consensus node --spec FILE --id N`` for each node (or
only the ``--only`` ones), each with its log in ``RUN_DIR/logs/N.log``, records the
process ids in ``RUN_DIR/cluster.json`` and waits until every node answers a status
request. Missing key files (of nodes, and of ``[[clients]]`` with a ``key_file``) are
generated first. ``cluster status FILE`` asks every node
(in parallel) for its role, term, commit index and link health. ``cluster down`` sends
SIGTERM, waits, then SIGKILLs what is left; it only signals processes whose command line
is still a ruflo-consensus node, so a recycled process id is never hit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

from ..identity import NodeIdentity, keygen, manifest_path
from .client import ClientError, ClusterClient
from .spec import ClusterSpec, load_spec

__all__ = [
    "ClusterError",
    "cluster_down",
    "cluster_status",
    "cluster_up",
    "default_run_dir",
    "node_command",
    "read_state",
]


class ClusterError(Exception):
    """A cluster could not be started or stopped as asked."""


def default_run_dir(spec_path: str | Path) -> Path:
    """Where ``cluster up`` keeps logs and pids by default: ``.ruflo-cluster/<spec name>``."""
    return Path(".ruflo-cluster") / Path(spec_path).stem


def node_command(spec_path: str | Path, node_id: str, machine: str = "kv") -> list[str]:
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


def cluster_up(
    spec_path: str | Path,
    run_dir: str | Path | None = None,
    *,
    only: list[str] | None = None,
    machine: str = "kv",
    wait_s: float = 30.0,
) -> dict[str, int]:
    """Start the spec's nodes (or ``only`` those) as processes; return ``{node: pid}``.

    Nodes already running from this run folder are left alone. Raises
    :class:`ClusterError` with the tail of its log when a node exits during start-up or
    does not answer within ``wait_s`` seconds.
    """
    spec = load_spec(spec_path)
    folder = Path(run_dir) if run_dir is not None else default_run_dir(spec_path)
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    ensure_keys(spec)
    state = read_state(folder)
    state["spec"] = str(Path(spec_path).resolve())
    pids: dict[str, int] = {k: int(v) for k, v in state["pids"].items()}
    wanted = only or spec.ids
    for node_id in wanted:
        spec.check_node(node_id)
    started: dict[str, subprocess.Popen[bytes]] = {}
    for node_id in wanted:
        if node_id in pids and _alive(pids[node_id]):
            continue
        log = open(folder / "logs" / f"{node_id}.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(
                node_command(spec_path, node_id, machine),
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
    deadline = time.monotonic() + wait_s
    waiting = set(started)
    while waiting:
        for node_id in sorted(waiting):
            proc = started[node_id]
            if proc.poll() is not None:
                tail = _tail(folder / "logs" / f"{node_id}.log")
                raise ClusterError(f"{node_id} exited with code {proc.returncode}:\n{tail}")
        ready = {n for n in waiting if _answers(spec, n)}
        waiting -= ready
        if waiting and time.monotonic() > deadline:
            raise ClusterError(f"{', '.join(sorted(waiting))} did not answer in {wait_s} s")
        if waiting:
            time.sleep(0.05)
    return {n: pids[n] for n in wanted}


def _answers(spec: ClusterSpec, node_id: str) -> bool:
    async def probe() -> bool:
        try:
            await ClusterClient(spec, node_id, only=True).call("status", timeout=1.0)
        except ClientError as exc:
            return exc.code == "UNAUTHENTICATED"  # it is up, it just does not know our key
        except Exception:
            return False
        return True

    return trio.run(probe)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def cluster_status(
    spec_path: str | Path, timeout: float = 2.0, *, identity: NodeIdentity | None = None
) -> list[dict[str, Any]]:
    """Ask every node for its status, in parallel; an unreachable node gets ``error``.

    Requests are signed with ``identity`` (default: the spec's client key file).
    """
    spec = load_spec(spec_path)
    results: dict[str, dict[str, Any]] = {}

    async def one(node_id: str) -> None:
        try:
            client = ClusterClient(spec, node_id, only=True, identity=identity)
            _, status = await client.call("status", timeout)
            results[node_id] = status
        except Exception as exc:
            results[node_id] = {"id": node_id, "error": str(exc)[:120]}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for node_id in spec.ids:
                nursery.start_soon(one, node_id)

    trio.run(main)
    return [results[n] for n in spec.ids]


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
