"""Traps that lost operators data or time: each test failed before its fix.

Processes a test starts are stopped in a ``finally`` (SIGKILL of what is left), also
when the test fails. Everything binds 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from ruflo_consensus.runtime import load_spec, write_local_spec
from ruflo_consensus.runtime.cluster import read_state
from ruflo_consensus.runtime.spec import SpecError
from tests.helpers.runtime_helpers import FAST_RAFT, cli, local_spec, start_node


def _with_backend(path: Path, backend: str) -> Path:
    text = path.read_text()
    path.write_text(re.sub(r'^backend = ".*"$', f'backend = "{backend}"', text, flags=re.M))
    return path


def _kill_run(run: Path) -> None:
    """SIGKILL every process a run folder records (teardown, whatever happened)."""
    try:
        pids = read_state(run)["pids"].values()
    except Exception:
        return
    for pid in pids:
        with contextlib.suppress(OSError):  # `cluster up` starts each in its own session
            os.killpg(int(pid), signal.SIGKILL)


# --------------------------------------------------------------- 1. backend fallback


@pytest.mark.parametrize("backend", ["pbft", "crdt", "pysyncobj", "Raft"])
def test_a_spec_with_a_backend_the_runtime_cannot_run_is_refused(
    tmp_path: Path, backend: str
) -> None:
    path = _with_backend(write_local_spec(tmp_path, "mesh", 3), backend)
    with pytest.raises(SpecError, match=f"backend {backend!r}.*raft"):
        load_spec(path)


def test_cluster_up_on_a_pbft_spec_exits_2_and_starts_nothing(tmp_path: Path) -> None:
    path = _with_backend(write_local_spec(tmp_path, "mesh", 3), "pbft")
    run = tmp_path / "run"
    try:
        up = cli("cluster", "up", str(path), "--dir", str(run))
    finally:
        _kill_run(run)
    assert up.returncode == 2
    lines = up.stderr.strip().splitlines()
    assert len(lines) == 1 and "pbft" in lines[0] and "raft" in lines[0]
    assert not (run / "cluster.json").exists()


def test_the_runtime_backends_are_named() -> None:
    from ruflo_consensus.runtime.spec import RUNTIME_BACKENDS

    assert RUNTIME_BACKENDS == ("raft",)


async def test_node_status_names_its_backend(tmp_path: Path) -> None:
    spec = local_spec(tmp_path, "mesh", 1, runtime={"data_dir": None})
    assert spec.backend == "raft"
    async with trio.open_nursery() as nursery:
        node = await start_node(nursery, spec, "n1")
        status = node.status()
        nursery.cancel_scope.cancel()
    assert status["backend"] == "raft"


def test_cluster_status_shows_the_backend(tmp_path: Path) -> None:
    path = write_local_spec(tmp_path, "mesh", 1, raft=FAST_RAFT)
    run = tmp_path / "run"
    try:
        assert cli("cluster", "up", str(path), "--dir", str(run)).returncode == 0
        st = cli("cluster", "status", str(path), "--json")
        assert st.returncode == 0, st.stderr
        assert [s["backend"] for s in json.loads(st.stdout)] == ["raft"]
        table = cli("cluster", "status", str(path))
        assert "backend" in table.stdout and "raft" in table.stdout
    finally:
        cli("cluster", "down", str(path), "--dir", str(run))
        _kill_run(run)


# --------------------------------------------------------------- 6. kv cas exit code


def test_kv_cas_that_does_not_swap_exits_1_and_unavailable_exits_3(tmp_path: Path) -> None:
    path = write_local_spec(tmp_path, "mesh", 1, raft=FAST_RAFT)
    run = tmp_path / "run"
    spec = str(path)
    try:
        # nobody is running yet: no answer is "unavailable", not "no"
        none = cli("kv", "get", "a", "--spec", spec, "--timeout", "1")
        assert none.returncode == 3, none.stderr
        assert cli("cluster", "up", spec, "--dir", str(run)).returncode == 0
        assert cli("kv", "put", "a", "x", "--spec", spec).returncode == 0
        swapped = cli("kv", "cas", "a", "x", "y", "--spec", spec)
        assert (swapped.returncode, swapped.stdout.strip()) == (0, "true")
        kept = cli("kv", "cas", "a", "x", "z", "--spec", spec)
        assert (kept.returncode, kept.stdout.strip()) == (1, "false")
        assert cli("kv", "get", "a", "--spec", spec).stdout.strip() == '"y"'
    finally:
        cli("cluster", "down", spec, "--dir", str(run))
        _kill_run(run)


def test_kv_help_lists_the_exit_codes() -> None:
    text = cli("kv", "cas", "--help").stdout
    assert "exit codes" in text and "did not swap" in text and "3" in text


# --------------------------------------------------------------- 7. pysyncobj binds 127.0.0.1


def _listening_hosts(port: int) -> set[str]:
    """The local addresses (hex, as /proc/net/tcp spells them) listening on ``port``."""
    hosts = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                host, hexport = local.rsplit(":", 1)
                if state == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                    hosts.add(host)
    return hosts


def test_bench_pysyncobj_nodes_bind_loopback_only() -> None:
    import time

    from pysyncobj import SyncObj

    from ruflo_consensus.runtime.bench import pysyncobj_conf
    from ruflo_consensus.runtime.localspec import free_ports

    (port,) = free_ports(1)
    me = f"127.0.0.1:{port}"
    conf = pysyncobj_conf(me)
    assert conf.bindAddress == me
    node = SyncObj(me, [], conf)
    try:
        deadline = time.monotonic() + 30
        while not _listening_hosts(port) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _listening_hosts(port) == {"0100007F"}  # 127.0.0.1, not 0.0.0.0
    finally:
        node.destroy()


# --------------------------------------------------------------- 3. keygen


def _cli_in(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``ruflo-consensus ARGS`` run in ``folder`` (keygen's default paths are relative)."""
    return subprocess.run(
        [sys.executable, "-m", "ruflo_consensus.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=folder,
        env={**os.environ, "COLUMNS": "200", "PYTHONPATH": str(Path.cwd())},
    )


def test_keygen_with_spec_writes_where_the_spec_reads_and_says_so(tmp_path: Path) -> None:
    from ruflo_consensus.identity import load_key_file

    path = write_local_spec(tmp_path / "cluster", "mesh", 3)
    key = tmp_path / "cluster" / "keys" / "n2.key"
    key.unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    made = _cli_in(elsewhere, "keygen", "--id", "n2", "--spec", str(path))
    assert made.returncode == 0, made.stderr
    assert load_key_file(key, "n2").node_id == "n2"
    assert str(key) in made.stdout.replace("\n", "")
    assert not (elsewhere / "keys").exists()
    # the spec's client key too; an id the spec does not list is refused
    (tmp_path / "cluster" / "keys" / "admin.key").unlink()
    assert _cli_in(elsewhere, "keygen", "--id", "admin", "--spec", str(path)).returncode == 0
    stranger = _cli_in(elsewhere, "keygen", "--id", "n9", "--spec", str(path))
    assert stranger.returncode == 2 and "n9" in stranger.stderr


def test_keygen_without_spec_says_the_absolute_path(tmp_path: Path) -> None:
    made = _cli_in(tmp_path, "keygen", "--id", "n1")
    assert made.returncode == 0, made.stderr
    assert str(tmp_path / "keys" / "n1.key") in made.stdout.replace("\n", "")


@pytest.mark.parametrize("bad", ["a/b", "../n1", "", ".hidden", "n 1", "x" * 129])
def test_keygen_refuses_an_id_that_is_not_a_node_id(tmp_path: Path, bad: str) -> None:
    made = _cli_in(tmp_path, "keygen", "--id", bad)
    assert made.returncode == 2
    assert len(made.stderr.strip().splitlines()) == 1 and "node id" in made.stderr
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------- 4. cluster down


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    with contextlib.suppress(OSError):  # a zombie (not reaped yet) is not running
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def test_cluster_down_from_another_folder_stops_what_up_started(tmp_path: Path) -> None:
    path = write_local_spec(tmp_path / "specs", "mesh", 1, raft=FAST_RAFT)
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    runs = [tmp_path / "specs" / ".ruflo-cluster" / "cluster", here / ".ruflo-cluster" / "cluster"]
    try:
        up = _cli_in(here, "cluster", "up", str(path))
        assert up.returncode == 0, up.stderr
        assert (runs[0] / "cluster.json").exists()  # the run folder follows the spec
        pid = int(read_state(runs[0])["pids"]["n1"])
        down = _cli_in(there, "cluster", "down", str(path))
        assert down.returncode == 0, down.stderr
        assert "n1: stopped" in down.stdout
        assert not _pid_alive(pid)
        # a relative spec path from the spec's own folder finds the same run folder
        again = _cli_in(tmp_path / "specs", "cluster", "down", "cluster.toml")
        assert again.returncode == 1 and "nothing to stop" in again.stderr
    finally:
        for run in runs:
            _kill_run(run)


def test_cluster_down_of_a_spec_that_does_not_exist_exits_2(tmp_path: Path) -> None:
    down = _cli_in(tmp_path, "cluster", "down", "nonexistent.toml")
    assert down.returncode == 2 and "nonexistent.toml" in down.stderr


def test_cluster_down_that_finds_nothing_exits_1(tmp_path: Path) -> None:
    path = write_local_spec(tmp_path, "mesh", 1)
    down = _cli_in(tmp_path, "cluster", "down", str(path))
    assert down.returncode == 1
    assert len(down.stderr.strip().splitlines()) == 1 and "nothing to stop" in down.stderr


# --------------------------------------------------------------- 5. cluster up failures


def _recorded_pids(run: Path) -> list[int]:
    try:
        return [int(p) for p in read_state(run)["pids"].values()]
    except Exception:
        return []


def test_cluster_up_with_an_insecure_client_key_fails_at_once_and_says_why(
    tmp_path: Path,
) -> None:
    import time

    path = write_local_spec(tmp_path, "mesh", 3, raft=FAST_RAFT)
    os.chmod(tmp_path / "keys" / "admin.key", 0o644)
    run = tmp_path / "run"
    started = time.monotonic()
    try:
        up = cli("cluster", "up", str(path), "--dir", str(run))
    finally:
        _kill_run(run)
    assert time.monotonic() - started < 20  # not the 30 s start-up wait
    assert up.returncode == 2
    lines = up.stderr.strip().splitlines()
    assert len(lines) == 1 and "admin.key" in lines[0] and "group or others" in lines[0]
    assert not any(_pid_alive(p) for p in _recorded_pids(run))


def test_cluster_up_with_an_insecure_node_key_starts_nothing(tmp_path: Path) -> None:
    path = write_local_spec(tmp_path, "mesh", 3, raft=FAST_RAFT)
    os.chmod(tmp_path / "keys" / "n2.key", 0o644)
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    (run / "logs" / "n2.log").write_text("an old run's line\n" * 50)
    try:
        up = cli("cluster", "up", str(path), "--dir", str(run))
        pids = _recorded_pids(run)
    finally:
        _kill_run(run)
    assert up.returncode == 2
    lines = up.stderr.strip().splitlines()
    assert len(lines) == 1 and "n2.key" in lines[0] and "old run" not in up.stderr
    assert not any(_pid_alive(p) for p in pids)


def test_a_failed_cluster_up_stops_what_it_started(tmp_path: Path) -> None:
    """n3 cannot listen (its port is taken): the others are stopped again, and the one
    line of n3's own error from this run is shown, not its whole log."""
    import socket

    path = write_local_spec(tmp_path, "mesh", 3, raft=FAST_RAFT)
    spec = load_spec(path)
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    (run / "logs" / "n3.log").write_text("an old run's line\n" * 50)
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", spec.endpoints["n3"].port))
    blocker.listen()
    try:
        up = cli("cluster", "up", str(path), "--dir", str(run))
        pids = _recorded_pids(run)
    finally:
        blocker.close()
        _kill_run(run)
    assert up.returncode in (2, 3), up.stderr
    lines = up.stderr.strip().splitlines()
    assert len(lines) == 1 and "n3" in lines[0] and "old run" not in up.stderr, up.stderr
    assert "stopped" in lines[0]
    assert not any(_pid_alive(p) for p in pids)


# --------------------------------------------------------------- 2. durable by default,
# and a node that lost its state neither votes nor counts until it has rejoined

SHIPPED = sorted((Path(__file__).resolve().parents[2] / "topologies").glob("*.toml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_specs_keep_the_log_on_disk(path: Path) -> None:
    spec = load_spec(path)
    assert spec.runtime.storage == "file"
    assert spec.data_dir("n1") == path.parent / "data" / "n1"


def test_open_node_is_durable_without_a_runtime_table(tmp_path: Path) -> None:
    from ruflo_consensus.runtime import build_node
    from ruflo_consensus.statemachine import KVStateMachine
    from ruflo_consensus.storage import FileStorage

    path = write_local_spec(tmp_path, "mesh", 3)
    text = path.read_text()
    path.write_text(re.sub(r'^data_dir = "data"\n', "", text, flags=re.M))
    assert load_spec(path).runtime.data_dir == "data"  # the default
    node = build_node(path, "n1", KVStateMachine())
    try:
        assert isinstance(node.storage, FileStorage)
    finally:
        node.storage.close()


async def _lose_state_and_restart(tmp_path: Path, storage: str) -> None:
    import shutil

    from ruflo_consensus.runtime import NodeError
    from tests.helpers.runtime_helpers import (
        PATIENCE,
        get,
        halt,
        put,
        start_nodes,
        wait_leader,
        wait_until,
    )

    runtime = {"data_dir": None} if storage == "memory" else {}
    spec = local_spec(tmp_path, "mesh", 3, runtime=runtime)
    async with trio.open_nursery() as nursery:
        nodes = await start_nodes(nursery, spec)
        leader = await wait_leader(nodes)
        victim = next(n for n in nodes.values() if n is not leader)
        for i in range(5):
            await leader.submit(put(f"k{i}", str(i)), timeout=PATIENCE)
        await victim.wait_applied(leader.applied, timeout=PATIENCE)
        await halt(nodes.pop(victim.node_id))
        data = spec.data_dir(victim.node_id)
        if data is not None:
            shutil.rmtree(data)  # the wiped disk
        # it acknowledged entries and may have voted: it must not come back a voter
        with pytest.raises(NodeError, match="rejoin"):
            await start_node(nursery, spec, victim.node_id)
        # the way back: remove it, start it to rejoin (a spare), add it again
        await leader.change_membership("remove-voter", victim.node_id, timeout=PATIENCE)
        back = await start_node(nursery, spec, victim.node_id, rejoin=True)
        assert not back.core.is_voter  # type: ignore[attr-defined]
        assert back.status()["rejoining"] is True
        await leader.change_membership("add-learner", victim.node_id, timeout=PATIENCE)
        await back.wait_applied(leader.applied, timeout=PATIENCE)  # the learner catches up
        assert not back.core.is_voter  # type: ignore[attr-defined]
        last = leader.core.last_index  # type: ignore[attr-defined]
        await wait_until(lambda: leader.status()["progress"].get(victim.node_id, 0) >= last)
        await leader.change_membership("promote-learner", victim.node_id, timeout=PATIENCE)
        await wait_until(lambda: back.core.is_voter)  # type: ignore[attr-defined]
        assert back.status()["rejoining"] is False
        assert await back.read(get("k4"), timeout=PATIENCE) == "4"
        nursery.cancel_scope.cancel()


async def test_a_voter_whose_disk_was_wiped_refuses_to_start_until_it_rejoins(
    tmp_path: Path,
) -> None:
    await _lose_state_and_restart(tmp_path, "file")


async def test_a_memory_storage_node_does_not_come_back_as_a_voter(tmp_path: Path) -> None:
    await _lose_state_and_restart(tmp_path, "memory")


def test_sigkilled_memory_node_restarted_with_up_only_must_rejoin(tmp_path: Path) -> None:
    """The reported scenario, end to end: memory storage, SIGKILL, ``cluster up --only``.
    The empty node refuses (one line, exit 2) instead of voting; remove, rejoin, add."""
    path = write_local_spec(tmp_path, "mesh", 3, raft=FAST_RAFT, runtime={"data_dir": None})
    run = tmp_path / "run"
    spec = str(path)
    try:
        assert cli("cluster", "up", spec, "--dir", str(run)).returncode == 0
        assert cli("kv", "put", "a", "1", "--spec", spec).returncode == 0
        status = json.loads(cli("cluster", "status", spec, "--json").stdout)
        victim = next(s["id"] for s in status if s["role"] != "leader")
        pid = int(read_state(run)["pids"][victim])
        os.kill(pid, signal.SIGKILL)
        again = cli("cluster", "up", spec, "--dir", str(run), "--only", victim)
        assert again.returncode == 2, again.stderr
        lines = again.stderr.strip().splitlines()
        assert len(lines) == 1 and "--rejoin" in lines[0] and victim in lines[0]
        removed = cli("cluster", "remove", spec, victim)
        assert removed.returncode == 0, removed.stderr
        back = cli("cluster", "up", spec, "--dir", str(run), "--only", victim, "--rejoin")
        assert back.returncode == 0, back.stderr
        table = cli("cluster", "status", spec)
        assert "rejoining" in table.stdout
        added = cli("cluster", "add", spec, victim)
        assert added.returncode == 0, added.stderr
        got = cli("kv", "get", "a", "--spec", spec, "--node", victim)
        assert got.stdout.strip() == '"1"'
        status = json.loads(cli("cluster", "status", spec, "--json").stdout)
        assert all(s["rejoining"] is False for s in status)
    finally:
        cli("cluster", "down", spec, "--dir", str(run))
        _kill_run(run)
