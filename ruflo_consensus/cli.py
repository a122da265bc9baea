"""The ``ruflo-consensus`` command.

Exit codes, everywhere: 0 success, 1 the answer is "no" (a safety/linearizability
failure was found, ``kv cas`` did not swap, a node did not answer ``cluster status``, …),
2 bad input (a clear one-line message on stderr, never a traceback), 3 unknown or
unavailable (a checker timed out without deciding, a cluster did not answer in time).
Every ``--help`` ends with examples and these codes as that command means them
(:data:`EXAMPLES`, :data:`EXIT_CODES`; the runtime commands':
:data:`ruflo_consensus.runtime.commands.EXIT_CODES`).

Under ``--json`` (every command has it) an error is one object ``{"error": CODE,
"message": TEXT}`` on stdout instead of the line on stderr, with the same exit code
(``check`` reports a bad file in its per-file object).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console

from . import __version__
from .topology import KINDS, TopologyError, load_topology

if TYPE_CHECKING:
    from .sim.config import SimConfig
    from .sim.workload import WorkloadFactory

# The simulator (``.sim``, which pulls in every backend) and the federation are imported
# only by the commands that use them: ``kv``, ``cluster status`` and ``node`` start without
# them. The simulator's options are added to ``simulate`` and ``bench sim`` when those are
# parsed.

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_FAIL, EXIT_BAD_INPUT, EXIT_UNKNOWN = 0, 1, 2, 3

EXIT_CODES: dict[str, str] = {
    "": """exit codes:
  0  success
  1  the answer is no (a failing seed, a non-linearizable history, kv cas did not swap)
  2  bad input: one line on stderr (or a JSON error object with --json), no traceback
  3  unknown or unavailable (a checker timed out, a cluster did not answer in time)

'ruflo-consensus COMMAND --help' shows a command's options, examples and exit codes.""",
    "simulate": """exit codes:
  0  every seed passed: no invariant broke, every checked history is linearizable
  1  a seed failed: an invariant broke or a history is not linearizable
  2  bad input: usage, a setting out of range, more Byzantine replicas than f
     without --allow-over-f
  3  unknown: a linearizability check timed out without deciding""",
    "check": """exit codes:
  0  every history is linearizable
  1  a history is not linearizable
  2  bad input: a file that cannot be read or parsed, an unknown model
  3  unknown: a check ran out of time (--timeout) or memory (--memo-budget)""",
    "bench": """exit codes:
  0  the benchmark ran (it prints numbers, not verdicts)
  2  bad input: usage, a setting out of range""",
}
"""The exit-code epilogs of the top-level help, ``simulate``, ``check`` and ``bench``
(the runtime commands have theirs: :data:`ruflo_consensus.runtime.commands.EXIT_CODES`)."""

EXAMPLES: dict[str, tuple[str, ...]] = {
    "": (
        "simulate --seed 7                          # one seeded chaos run of 5-node Raft",
        "simulate --seeds 0:200 --json              # a sweep, one process per core",
        "simulate --backend pbft --nodes 4          # PBFT with f = 1 Byzantine replica",
        "check run.jsonl --model kv                 # a history's linearizability",
        "bench sim --seeds 3                        # simulator speed",
        "cluster up topologies/mesh.toml            # real nodes on 127.0.0.1",
        "kv put greeting hello --spec topologies/mesh.toml",
    ),
    "simulate": (
        "simulate --seed 7",
        "simulate --seeds 0:1000 --faults crash,partition",
        "simulate --seeds 50 --json                 # seeds 0 to 49",
        "simulate --backend pbft --nodes 7 --byzantine 2 --behaviours equivocate",
        "simulate --backend pbft --nodes 4 --byzantine 2 --allow-over-f   # past f: may fail",
        "simulate --workload federation --duration 10",
        "simulate --seed 3 --history run.jsonl      # then: ruflo-consensus check run.jsonl",
    ),
    "check": (
        "check run.jsonl --model kv",
        "check a.jsonl b.edn --model register --timeout 60 --json",
    ),
    "bench": (
        "bench sim --seeds 3 --json",
        "bench storage --entries 100000",
        "bench check --ops 10000 --clients 10",
        "bench cluster --seconds 5",
    ),
    "bench sim": (
        "bench sim --seeds 3 --json                 # seeds 0, 1, 2",
        "bench sim --seeds 10:13 --backend pbft --nodes 4",
    ),
    "bench storage": (
        "bench storage --entries 1000000 --batch 1000",
        "bench storage --entries 100000 --snapshot-every 10000 --json",
    ),
    "bench check": (
        "bench check --ops 10000 --clients 10 --keys 10",
        "bench check --partition --json",
    ),
    "bench cluster": (
        "bench cluster --seconds 5",
        "bench cluster --only ruflo --no-fsync --json",
    ),
}
"""Example command lines (without ``ruflo-consensus``) for the ``--help`` of the top level,
``simulate``, ``check`` and ``bench``; the runtime commands' are in
:data:`ruflo_consensus.runtime.commands.EXAMPLES`."""


def _epilog(command: str) -> str:
    """The ``--help`` epilog of ``command`` (``""``: the top level): examples, exit codes."""
    lines = "\n".join(f"  ruflo-consensus {example}" for example in EXAMPLES[command])
    return f"examples:\n{lines}\n\n{EXIT_CODES[command.split()[0] if command else '']}"


class _Parser(argparse.ArgumentParser):
    """argparse that exits with 2 and one line, never a traceback.

    ``setup(parser)``, when given, adds options that need heavy imports: it runs once,
    when this (sub)command is parsed or its help is shown.
    """

    json_errors = False
    """Set by :func:`main` when ``--json`` is on the command line: a usage error is then
    the JSON error object on stdout, like every other error under ``--json``."""

    def __init__(self, *args: Any, setup: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._setup = setup

    def _set_up(self) -> None:
        if self._setup is not None:
            setup, self._setup = self._setup, None
            setup(self)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._set_up()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._set_up()
        return super().format_help()

    def error(self, message: str) -> Any:
        if _Parser.json_errors:
            print(json.dumps({"error": "bad-input", "message": f"{self.prog}: {message}"}))
            self.exit(EXIT_BAD_INPUT)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _add_sim_options(p: argparse.ArgumentParser) -> None:
    from .sim.config import (
        ALL_FAULTS,
        BACKENDS,
        BYZANTINE_BEHAVIOURS,
        LATENCY_KINDS,
        READ_MODES,
        WORKLOADS,
        SimConfig,
        settable_fields,
    )

    d = SimConfig()
    p.add_argument(
        "--nodes",
        type=int,
        default=None,
        help=f"cluster size (default {d.nodes}, or the topology file's)",
    )
    p.add_argument(
        "--faults",
        default="all",
        help="comma list of faults, or 'all' / 'none' (default all): " + ", ".join(ALL_FAULTS),
    )
    p.add_argument(
        "--duration",
        type=_positive_float,
        default=d.duration_s,
        help="simulated seconds (default %(default)s)",
    )
    p.add_argument("--clients", type=int, default=d.clients, help="concurrent clients")
    p.add_argument("--keys", type=int, default=d.keys, help="keys the KV workload uses")
    p.add_argument(
        "--workload",
        default=d.workload,
        choices=list(WORKLOADS),
        help="client workload (default %(default)s)",
    )
    p.add_argument(
        "--backend",
        default=d.backend,
        choices=list(BACKENDS),
        help="consensus backend (default %(default)s)",
    )
    p.add_argument(
        "--latency",
        default=d.latency,
        choices=list(LATENCY_KINDS),
        help="link latency distribution (default %(default)s; mean 2 ms, minimum 0.5 ms)",
    )
    p.add_argument(
        "--reads",
        default=d.reads,
        choices=list(READ_MODES),
        help="how get is served: read-index (default), lease, or through the log; "
        "pbft: through the log, or 'fast' (the read-only fast path)",
    )
    p.add_argument(
        "--topology",
        default=d.topology,
        help="mesh | ring | star | hierarchical, or a TOML spec file (default %(default)s)",
    )
    p.add_argument(
        "--byzantine",
        type=int,
        default=None,
        metavar="N",
        help="pbft: how many replicas are Byzantine (default f = (nodes - 1) // 3)",
    )
    p.add_argument(
        "--behaviours",
        default="all",
        help="pbft: comma list of Byzantine behaviours to draw from, or 'all': "
        + ", ".join(BYZANTINE_BEHAVIOURS),
    )
    p.add_argument(
        "--allow-over-f",
        action="store_true",
        help="pbft: run more than f Byzantine replicas anyway (refused otherwise, exit 2); "
        "the report then says safety is not guaranteed",
    )
    p.add_argument(
        "--quiet-tail",
        type=float,
        default=d.quiet_tail_s,
        metavar="S",
        help="seconds at the end without faults (default %(default)s)",
    )
    p.add_argument(
        "--nemesis-interval",
        default="{:g}:{:g}".format(*d.nemesis_interval_s),
        metavar="LO:HI",
        help="seconds between two faults (default %(default)s)",
    )
    p.add_argument(
        "--fault-duration",
        default="{:g}:{:g}".format(*d.fault_duration_s),
        metavar="LO:HI",
        help="seconds a fault lasts (default %(default)s)",
    )
    p.add_argument(
        "--snapshot-entries",
        type=int,
        default=d.snapshot_entries,
        help="Raft: snapshot and compact every N applied entries, 0 never (default %(default)s)",
    )
    p.add_argument(
        "--snapshot-chunk",
        type=int,
        default=d.snapshot_chunk_bytes,
        help="Raft: InstallSnapshot chunk size in bytes (default %(default)s)",
    )
    p.add_argument(
        "--max-drift",
        type=float,
        default=d.max_drift,
        help="how far the nemesis may skew clocks, ±fraction; leases assume as much "
        "(default %(default)s)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other simulator setting, e.g. client_timeout_ms=30 or disk_sync_ms=0.1:2 "
        "(repeatable; replay commands use it): " + ", ".join(sorted(settable_fields())),
    )


def _config_from(args: argparse.Namespace, seed: int = 0) -> SimConfig:
    from .sim.config import (
        SimConfig,
        SimConfigError,
        parse_behaviours,
        parse_faults,
        parse_setting,
        parse_span,
    )

    nodes = args.nodes
    if args.topology not in KINDS and nodes is None:
        # a spec file decides the cluster size unless --nodes says otherwise
        try:
            nodes = len(load_topology(args.topology).nodes)
        except TopologyError as exc:
            raise SimConfigError(str(exc)) from None
    config = SimConfig(
        seed=seed,
        nodes=SimConfig().nodes if nodes is None else nodes,
        backend=args.backend,
        topology=args.topology,
        reads=args.reads,
        latency=args.latency,
        duration_s=args.duration,
        faults=parse_faults(args.faults),
        clients=args.clients,
        keys=args.keys,
        workload=args.workload,
        byzantine=args.byzantine,
        behaviours=parse_behaviours(args.behaviours),
        allow_over_f=args.allow_over_f,
        quiet_tail_s=args.quiet_tail,
        nemesis_interval_s=parse_span(args.nemesis_interval, "--nemesis-interval"),
        fault_duration_s=parse_span(args.fault_duration, "--fault-duration"),
        snapshot_entries=args.snapshot_entries,
        snapshot_chunk_bytes=args.snapshot_chunk,
        max_drift=args.max_drift,
        **dict(parse_setting(text) for text in args.set),
    )
    config.build_topology()  # fail early, with a clear message, on a bad spec
    return config


def _workload_factory(name: str) -> WorkloadFactory:
    """The simulator workload ``--workload NAME`` runs: the simulator's own KV workload, or
    the federation's (the simulator does not import the federation; this command does)."""
    if name == "federation":
        from .federation.workload import federation_sim_workload

        return federation_sim_workload
    from .sim.workload import kv_workload

    return kv_workload


def _simulate_setup(sim: argparse.ArgumentParser) -> None:
    """The ``simulate`` description and options (they need the simulator's settings)."""
    from .sim.config import BYZANTINE_DESCRIPTIONS, FAULT_DESCRIPTIONS

    sim.description = (
        "Run a seeded chaos simulation (Raft, PBFT or CRDT; the KV or the federation\n"
        "workload), check the backend's invariants while it runs and, for KV under Raft\n"
        "or PBFT, the history's linearizability after. One seed replays bit for bit;\n"
        "--seeds sweeps many.\n\n"
        "operations in the report: ok completed; fail definitely not applied (a refusal:\n"
        "in the federation workload, commands the machines reject by design); info\n"
        "unknown outcome (no answer in time).\n\n"
        "faults:\n"
        + "\n".join(f"  {k}: {v}" for k, v in FAULT_DESCRIPTIONS.items())
        + "\n\nByzantine behaviours (--backend pbft):\n"
        + "\n".join(f"  {k}: {v}" for k, v in BYZANTINE_DESCRIPTIONS.items())
    )
    _add_sim_options(sim)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``ruflo-consensus`` command."""
    raw = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="ruflo-consensus",
        description="Consensus-replicated state machines (Raft, PBFT, CRDT): simulate and\n"
        "check them under faults, benchmark them, and run real nodes.",
        epilog=_epilog(""),
        formatter_class=raw,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser, metavar="COMMAND", title="commands"
    )

    sim = sub.add_parser(
        "simulate",
        help="run a seeded chaos simulation and check it",
        formatter_class=raw,
        epilog=_epilog("simulate"),
        setup=_simulate_setup,
    )
    sim.add_argument("--seed", type=int, default=0, help="seed of a single run (default 0)")
    sim.add_argument(
        "--seeds",
        metavar="A:B|N",
        help="sweep seeds A to B-1 across processes; a count N means 0:N",
    )
    sim.add_argument("--processes", type=int, default=None, help="sweep workers (default: cores)")
    sim.add_argument("--json", action="store_true", help="print a machine-readable summary")
    sim.add_argument(
        "--history", metavar="FILE", help="write the clients' history as JSON Lines (for 'check')"
    )

    chk = sub.add_parser(
        "check",
        help="check history files for linearizability",
        formatter_class=raw,
        epilog=_epilog("check"),
    )
    chk.add_argument("files", nargs="+", metavar="HISTORY", help="JSON Lines or EDN history files")
    chk.add_argument("--model", default="kv", help="register | kv | a registered model name")
    chk.add_argument(
        "--timeout",
        type=_positive_float,
        default=None,
        help="seconds per file before the answer is 'unknown'",
    )
    chk.add_argument("--json", action="store_true", help="one JSON object per file")
    chk.add_argument(
        "--memo-budget",
        type=_positive_int,
        default=None,
        help="configurations one key's search may memoise before the answer is 'unknown' "
        "(default 1,000,000, about 200 MB)",
    )
    chk.add_argument("--no-progress", action="store_true", help="no progress bar or lines")

    bench = sub.add_parser(
        "bench",
        help="benchmarks: sim, storage, check, cluster",
        description="Benchmarks; their numbers go to docs/benchmarks.md.",
        formatter_class=raw,
        epilog=_epilog("bench"),
    )
    bsub = _EpilogAdder(
        bench.add_subparsers(dest="bench", required=True, parser_class=_Parser), _epilog, "bench"
    )
    bsim = bsub.add_parser(
        "sim", help="simulated messages delivered per wall second", setup=_add_sim_options
    )
    bsim.add_argument(
        "--seeds",
        default="3",
        metavar="A:B|N",
        help="seeds A to B-1, one after another; a count N means 0:N (default 3)",
    )
    bsim.add_argument("--json", action="store_true")
    bsto = bsub.add_parser("storage", help="write, then reopen a WAL of N entries (time, memory)")
    bsto.add_argument("--entries", type=int, default=1_000_000)
    bsto.add_argument("--batch", type=int, default=1000, help="entries per save (one fsync)")
    bsto.add_argument("--dir", default=None, help="an empty directory (default: a temp dir)")
    bsto.add_argument(
        "--snapshot-every",
        type=int,
        default=0,
        help="save a snapshot each time the log passes another multiple of N (default: none)",
    )
    bsto.add_argument(
        "--segment-bytes", type=int, default=64 << 20, help="WAL segment size (default 64 MiB)"
    )
    bsto.add_argument("--json", action="store_true")
    bchk = bsub.add_parser("check", help="linearizability checker: time and peak memory")
    bchk.add_argument("--ops", type=_positive_int, default=10_000)
    bchk.add_argument("--clients", type=_positive_int, default=10)
    bchk.add_argument("--keys", type=_positive_int, default=10)
    bchk.add_argument("--seed", type=int, default=0)
    bchk.add_argument("--rounds", type=_positive_int, default=3)
    bchk.add_argument(
        "--partition",
        action="store_true",
        help="two histories with a network partition: linearizable, and stale reads of key 0",
    )
    bchk.add_argument("--memo-budget", type=_positive_int, default=None)
    bchk.add_argument("--timeout", type=_positive_float, default=None, help="seconds per check")
    bchk.add_argument("--json", action="store_true")
    _add_runtime_commands(sub, bsub)
    return parser


def _add_runtime_commands(sub: Any, bsub: Any) -> None:
    """keygen, node, cluster up/status/down/add/remove, kv put/get/cas and bench cluster."""
    from .runtime.commands import help_epilog

    sub = _EpilogAdder(sub, help_epilog)
    kg = sub.add_parser("keygen", help="write an Ed25519 key file (mode 0600) and its manifest")
    kg.add_argument("--id", required=True, help="the node (or client) id")
    where = kg.add_mutually_exclusive_group()
    where.add_argument(
        "--spec", default=None, help="write the key file where this cluster spec reads it"
    )
    where.add_argument("--out", default=None, help="key file path (default ./keys/ID.key)")
    kg.add_argument("--force", action="store_true", help="replace an existing key file")
    json_help = "one JSON object on stdout, errors too (the shape is below)"

    node = sub.add_parser("node", help="run one node of a cluster spec in this process")
    node.add_argument("--spec", required=True, help="the cluster spec (TOML)")
    node.add_argument("--id", required=True, help="which node of the spec to run")
    node.add_argument("--machine", default="kv", choices=["kv", "register"])
    rejoin_help = (
        "a node that saved state once and lost it (a wiped disk, memory storage) starts as "
        "a spare that never votes, instead of refusing to start (exit 2); use it after "
        "'cluster remove', then 'cluster add'"
    )
    node.add_argument("--rejoin", action="store_true", help=rejoin_help)
    for c in (kg, node):
        c.add_argument("--json", action="store_true", help=json_help)

    cl = sub.add_parser("cluster", help="start, inspect, resize and stop a local cluster")
    csub = _EpilogAdder(
        cl.add_subparsers(dest="cluster", required=True, parser_class=_Parser),
        help_epilog,
        "cluster",
    )
    init = csub.add_parser(
        "init", help="write DIR/cluster.toml: nodes on free ports of 127.0.0.1, fresh keys"
    )
    init.add_argument("dir", help="the folder for cluster.toml, keys/ and data/")
    init.add_argument("--nodes", type=_positive_int, default=3, help="how many nodes (1-64)")
    init.add_argument(
        "--topology", default="mesh", choices=["mesh", "ring", "star", "hierarchical"]
    )
    init.add_argument(
        "--spares",
        type=int,
        default=0,
        help="how many of the nodes start as spares (join = true) for 'cluster add'",
    )
    init.add_argument(
        "--force", action="store_true", help="rewrite an existing cluster.toml (keys are kept)"
    )
    init.add_argument("--json", action="store_true", help=json_help)
    up = csub.add_parser("up", help="start every node (logs in RUN_DIR/logs)")
    st = csub.add_parser("status", help="roles, terms, commit indexes and link health")
    down = csub.add_parser(
        "down", help="stop the nodes 'cluster up' started (exit 1 when none was running)"
    )
    add = csub.add_parser(
        "add", help="add a node of the spec: as a learner, then a voter once it caught up"
    )
    rm = csub.add_parser("remove", help="remove a voter (the leader too) or a learner")
    for c in (up, st, down, add, rm):
        c.add_argument("spec", help="the cluster spec (TOML)")
    for c in (add, rm):
        c.add_argument("node", help="the node id (a node of the spec)")
        c.add_argument("--timeout", type=_positive_float, default=60.0, help="seconds")
    for c in (up, down):
        c.add_argument(
            "--dir",
            default=None,
            help="run folder (default: .ruflo-cluster/NAME beside the spec, from any folder)",
        )
    up.add_argument("--only", default=None, help="comma list of node ids to start")
    up.add_argument("--machine", default="kv", choices=["kv", "register"])
    up.add_argument("--rejoin", action="store_true", help=rejoin_help)
    for c in (up, st, down, add, rm):
        c.add_argument("--json", action="store_true", help=json_help)
    key_help = "client key file to sign requests with (default: the spec's first [[clients]] key)"
    for c in (st, add, rm):
        c.add_argument("--key", dest="key_file", default=None, help=key_help)

    kv = sub.add_parser("kv", help="put/get/cas against a running cluster's KV machine")
    ksub = _EpilogAdder(
        kv.add_subparsers(dest="kv", required=True, parser_class=_Parser), help_epilog, "kv"
    )
    kput = ksub.add_parser("put", help="set KEY to VALUE")
    kput.add_argument("key")
    kput.add_argument("value")
    kget = ksub.add_parser("get", help="a linearizable read of KEY")
    kget.add_argument("key")
    kcas = ksub.add_parser(
        "cas", help="set KEY to NEW if it is OLD: prints true, or false and exits 1 (did not swap)"
    )
    kcas.add_argument("key")
    kcas.add_argument("old")
    kcas.add_argument("new")
    for c in (kput, kget, kcas):
        c.add_argument("--spec", required=True, help="the cluster spec (TOML)")
        c.add_argument("--node", default=None, help="ask this node first (default: any)")
        c.add_argument("--timeout", type=_positive_float, default=10.0)
        c.add_argument("--key", dest="key_file", default=None, help=key_help)
        c.add_argument("--json", action="store_true", help=json_help)

    bcl = bsub.add_parser(
        "cluster", help="3-node cluster vs pysyncobj on 127.0.0.1: writes/s and latency"
    )
    bcl.add_argument("--nodes", type=int, default=3)
    bcl.add_argument("--seconds", type=_positive_float, default=5.0, help="throughput phase")
    bcl.add_argument("--latency-ops", type=int, default=500, help="one-at-a-time writes")
    bcl.add_argument("--pipeline", type=int, default=256, help="writes in flight")
    bcl.add_argument("--no-fsync", action="store_true", help="our WAL without fsync")
    bcl.add_argument("--only", choices=["ruflo", "pysyncobj"], default=None)
    bcl.add_argument(
        "--pysyncobj-append-period",
        type=_positive_float,
        default=None,
        help="pysyncobj's appendEntriesPeriod in seconds (default: its own, 0.1)",
    )
    bcl.add_argument("--profile", metavar="FILE", help="cProfile of our leader's pipelined phase")
    bcl.add_argument(
        "--serial-append",
        action="store_true",
        help="our leader fsyncs before it sends AppendEntries (parallel_leader_append = false)",
    )
    bcl.add_argument("--json", action="store_true")


class _EpilogAdder:
    """A subparsers action whose ``add_parser`` gives each parser its ``--help`` epilog
    (examples and exit codes): ``epilog("PARENT NAME")``, kept as written."""

    def __init__(self, action: Any, epilog: Any, parent: str = "") -> None:
        self._action, self._epilog, self._parent = action, epilog, parent

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        kwargs.setdefault("epilog", self._epilog(f"{self._parent} {name}".strip()))
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        return self._action.add_parser(name, **kwargs)


def _cmd_simulate(args: argparse.Namespace, out: Console, err: Console) -> int:
    from .sim.config import SimConfigError
    from .sim.report import render_summary, run_simulation
    from .sim.sweep import parse_seed_range, render_sweep, run_sweep

    if args.history and args.seeds is not None:
        raise SimConfigError("--history writes one run's history: use it with --seed")
    if args.seeds is not None:
        seeds = parse_seed_range(args.seeds)
        base = _config_from(args)
        result = run_sweep(
            base,
            seeds,
            processes=args.processes,
            console=err,
            progress=not args.json,
            workload=_workload_factory(base.workload),
        )
        warnings = [w for w in (base.over_f_warning(),) if w is not None]
        if args.json:
            print(
                json.dumps(
                    {
                        "seeds": [seeds.start, seeds.stop],
                        "warnings": warnings,
                        "passed": sum(s.status == "pass" for s in result.summaries),
                        "failed": [s.to_json() for s in result.failures],
                        "unknown": [s.seed for s in result.unknown],
                        "trace_hashes": {str(s.seed): s.trace_hash for s in result.summaries},
                    }
                )
            )
        else:
            for warning in warnings:
                out.print(f"[bold yellow]warning:[/] {warning}")
            render_sweep(result, out)
        if result.failures:
            return EXIT_FAIL
        return EXIT_UNKNOWN if result.unknown else EXIT_OK
    config = _config_from(args, seed=args.seed)
    try:
        summary = run_simulation(
            config, history_path=args.history, workload=_workload_factory(config.workload)
        )
    except OSError as exc:
        raise SimConfigError(f"cannot write the history to {args.history}: {exc}") from None
    if args.json:
        print(json.dumps(summary.to_json()))
    else:
        render_summary(summary, out)
    return {"pass": EXIT_OK, "fail": EXIT_FAIL, "unknown": EXIT_UNKNOWN}[summary.status]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _cmd_check(args: argparse.Namespace, out: Console, err: Console) -> int:
    from .check.command import run_check
    from .check.linearizability import DEFAULT_MEMO_BUDGET

    if args.json:  # an unknown model as the one JSON error object, like any bad input
        from .check.models import UnknownModelError, get_model
        from .sim.config import SimConfigError

        try:
            get_model(args.model)
        except UnknownModelError as exc:
            raise SimConfigError(f"check: {exc}") from None
    budget = args.memo_budget or DEFAULT_MEMO_BUDGET
    return run_check(
        args.files,
        args.model,
        args.timeout,
        args.json,
        console=out,
        memo_budget=budget,
        progress=not args.no_progress,
    )


def _cmd_bench(args: argparse.Namespace, out: Console, err: Console) -> int:
    if args.bench == "cluster":
        from .runtime.bench import run_bench_cluster_command

        return run_bench_cluster_command(args, out, err)
    if args.bench == "storage":
        return _bench_storage(args, out)
    if args.bench == "check":
        from .check.command import run_bench_check
        from .check.linearizability import DEFAULT_MEMO_BUDGET
        from .sim.config import SimConfigError

        if args.partition and args.clients < 2:
            raise SimConfigError("bench check: --partition needs --clients 2 or more")
        run_bench_check(
            n_ops=args.ops,
            n_clients=args.clients,
            n_keys=args.keys,
            seed=args.seed,
            rounds=args.rounds,
            as_json=args.json,
            console=out,
            partition=args.partition,
            memo_budget=args.memo_budget or DEFAULT_MEMO_BUDGET,
            timeout=args.timeout,
        )
        return EXIT_OK
    from .sim.bench import render_bench_sim, run_bench_sim
    from .sim.sweep import parse_seed_range

    seeds = parse_seed_range(args.seeds)
    config = _config_from(args)
    result = run_bench_sim(
        config,
        seeds,
        console=err,
        progress=not args.json,
        workload=_workload_factory(config.workload),
    )
    if args.json:
        print(json.dumps(result))
    else:
        render_bench_sim(result, out)
    return EXIT_OK


def _bench_storage(args: argparse.Namespace, out: Console) -> int:
    import tempfile

    from rich.table import Table

    from .sim.config import SimConfigError
    from .storage.bench import bench_reopen

    if args.entries < 1 or args.batch < 1:
        raise SimConfigError("--entries and --batch must be positive")
    with tempfile.TemporaryDirectory(prefix="ruflo-bench-") as tmp:
        try:
            result = bench_reopen(
                args.dir or f"{tmp}/wal",
                args.entries,
                args.batch,
                snapshot_every=args.snapshot_every,
                segment_bytes=args.segment_bytes,
            )
        except ValueError as exc:
            raise SimConfigError(str(exc)) from None
    if args.json:
        print(json.dumps(result))
        return EXIT_OK
    table = Table(title=f"bench storage: {args.entries:,} entries, {args.batch} per fsync")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        shown = (
            f"{value:,.3f}"
            if isinstance(value, float)
            else f"{value:,}"
            if isinstance(value, int)
            else str(value)
        )
        table.add_row(key, shown)
    out.print(table)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ruflo-consensus`` console script; returns the exit code."""
    parser = build_parser()
    _Parser.json_errors = "--json" in (sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    finally:
        _Parser.json_errors = False
    out = Console()
    err = Console(stderr=True)
    handlers = {"simulate": _cmd_simulate, "check": _cmd_check, "bench": _cmd_bench}
    if args.command in ("keygen", "node", "cluster", "kv"):
        from .runtime.commands import run_runtime_command

        return run_runtime_command(args, out, err)
    from .sim.config import SimConfigError

    try:
        return handlers[args.command](args, out, err)
    except SimConfigError as exc:
        if getattr(args, "json", False):
            print(json.dumps({"error": "bad-input", "message": str(exc)}))
        else:
            print(f"ruflo-consensus: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("ruflo-consensus: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
