"""``cluster add`` / ``cluster remove`` on a ``cluster up`` cluster of real processes.

Three voters and a spare (``join = true``): ``cluster up`` starts all four, the spare
waits as "not a member"; ``cluster add`` makes it a voter, ``cluster remove`` takes the
leader out, the cluster goes on serving, and refusals exit non-zero with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path

from ruflo_consensus.runtime import write_local_spec
from ruflo_consensus.runtime.cluster import cluster_down
from tests.helpers.runtime_helpers import FAST_RAFT, cli


def test_cli_cluster_add_and_remove(tmp_path: Path) -> None:
    spec = write_local_spec(
        tmp_path,
        "mesh",
        4,
        raft={**FAST_RAFT, "snapshot_entries": 4},
        node_extra={"n4": {"join": True}},
    )
    run = tmp_path / "run"

    def statuses() -> dict[str, dict[str, object]]:
        out = cli("cluster", "status", str(spec), "--json")
        return {s["id"]: s for s in json.loads(out.stdout)}

    try:
        up = cli("cluster", "up", str(spec), "--dir", str(run))
        assert up.returncode == 0, up.stderr
        assert (run / "logs" / "n4.log").exists()  # the spare runs too, waiting to be added
        for i in range(5):
            assert cli("kv", "put", f"k{i}", str(i), "--spec", str(spec)).returncode == 0
        table = cli("cluster", "status", str(spec))
        assert table.returncode == 0 and "not a member" in table.stdout
        assert statuses()["n4"]["member"] == "none"

        add = cli("cluster", "add", str(spec), "n4", "--timeout", "60")
        assert add.returncode == 0, add.stdout + add.stderr
        assert "added n4 as a voter" in add.stdout
        st = statuses()
        leader = next(n for n, s in st.items() if s["role"] == "leader")
        assert st[leader]["voters"] == ["n1", "n2", "n3", "n4"]
        got = cli("kv", "get", "k4", "--spec", str(spec), "--node", "n4")
        assert got.returncode == 0 and got.stdout.strip() == '"4"'

        again = cli("cluster", "add", str(spec), "n2")
        assert again.returncode == 1 and "already-member" in again.stderr

        rm = cli("cluster", "remove", str(spec), leader)
        assert rm.returncode == 0, rm.stdout + rm.stderr
        assert cli("kv", "put", "after", "x", "--spec", str(spec)).returncode == 0
        got = cli("kv", "get", "k0", "--spec", str(spec), "--node", "n4")
        assert got.returncode == 0 and got.stdout.strip() == '"0"'
        table = cli("cluster", "status", str(spec))
        row = next(line for line in table.stdout.splitlines() if f" {leader} " in line)
        assert "not a member" in row
        st = statuses()
        new = next(n for n, s in st.items() if s["role"] == "leader")
        assert new != leader and leader not in st[new]["voters"]

        unknown = cli("cluster", "remove", str(spec), leader)  # not a member any more
        assert unknown.returncode == 1 and "unknown-node" in unknown.stderr
        nosuch = cli("cluster", "remove", str(spec), "n9")
        assert nosuch.returncode == 2 and "not in the spec" in nosuch.stderr
    finally:
        cluster_down(run)
