"""The command-line side of the runtime: keygen, node, cluster up/status/down/add/remove, kv.

Exit codes follow the CLI's one scheme (:data:`EXIT_CODES` is the ``--help`` epilog):
0 success; 1 the answer is "no" (``kv cas`` did not swap, a node in ``cluster status``
did not answer, the cluster refused the request, ``cluster down`` found nothing to
stop); 2 bad input (a clear one-line message, never a traceback); 3 unavailable (no
answer in time: a write may or may not have been applied; nodes that did not start).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = [
    "EXAMPLES",
    "EXIT_CODES",
    "JSON_SHAPES",
    "help_epilog",
    "render_status",
    "render_status_text",
    "run_runtime_command",
]

EXIT_OK, EXIT_FAIL, EXIT_BAD_INPUT, EXIT_UNAVAILABLE = 0, 1, 2, 3

EXIT_CODES = """exit codes:
  0  success
  1  the answer is no: kv cas did not swap (prints false); cluster status: a node did
     not answer; the cluster refused the request (unknown client key, a refused
     membership change); cluster down: no running node was recorded for the spec
  2  bad input: usage, spec (a backend real nodes cannot run too), key file, node id,
     a command the state machine rejects; a node that refuses to start (a key file
     others can read, saved state it lost: see node --rejoin)
  3  unavailable: no answer in time (a write may or may not have been applied);
     cluster up: a node did not start (it was stopped again)"""
"""The exit codes of keygen, node, cluster and kv: the epilog of their ``--help``."""

EXAMPLES: dict[str, tuple[str, ...]] = {
    "keygen": (
        "keygen --id n1 --spec topologies/mesh.toml     # where the spec reads n1's key",
        "keygen --id ops --out keys/ops.key --json      # a client key; prints its public key",
    ),
    "node": (
        "node --spec topologies/mesh.toml --id n1",
        "node --spec cluster.toml --id n4 --json        # one JSON line once it listens",
    ),
    "cluster": (
        "cluster init demo                              # writes demo/cluster.toml",
        "cluster up cluster.toml",
        "cluster status cluster.toml | grep leader",
        "cluster add cluster.toml n4",
        "cluster down cluster.toml",
    ),
    "cluster init": (
        "cluster init demo                              # demo/cluster.toml, 3 nodes",
        "cluster init demo --nodes 5 --topology ring --spares 1 --json",
    ),
    "cluster up": (
        "cluster up cluster.toml",
        "cluster up cluster.toml --only n2              # restart one node",
        "cluster up cluster.toml --json",
    ),
    "cluster status": (
        "cluster status cluster.toml",
        "cluster status cluster.toml --json | jq '.[] | {id, role, term}'",
    ),
    "cluster down": ("cluster down cluster.toml", "cluster down cluster.toml --json"),
    "cluster add": (
        "cluster add cluster.toml n4                    # a spare: learner, then voter",
        "cluster add cluster.toml n4 --timeout 120 --json",
    ),
    "cluster remove": (
        "cluster remove cluster.toml n2",
        "cluster remove cluster.toml n2 --json",
    ),
    "kv": (
        "kv put greeting hello --spec cluster.toml",
        "kv get greeting --spec cluster.toml",
        "kv cas greeting hello bye --spec cluster.toml --json",
    ),
    "kv put": (
        "kv put greeting hello --spec cluster.toml",
        "kv put greeting hello --spec cluster.toml --node n2 --json",
    ),
    "kv get": (
        "kv get greeting --spec cluster.toml",
        "kv get greeting --spec cluster.toml --json",
    ),
    "kv cas": (
        "kv cas greeting hello bye --spec cluster.toml  # prints true, or false (exit 1)",
        "kv cas greeting hello bye --spec cluster.toml --json",
    ),
}
"""Example command lines (without ``ruflo-consensus``) for each runtime command's help."""


def help_epilog(command: str) -> str:
    """The ``--help`` epilog of a runtime command (``"kv cas"``): examples, exit codes."""
    lines = [f"  ruflo-consensus {example}" for example in EXAMPLES.get(command, ())]
    examples = "examples:\n" + "\n".join(lines) + "\n\n" if lines else ""
    shape = JSON_SHAPES.get(command)
    shown = f"--json prints one line:\n  {shape}\n  {_JSON_ERRORS}\n\n" if shape else ""
    return examples + shown + EXIT_CODES


_REFUSALS = ("UNAUTHENTICATED", "REFUSED")  # client errors that are an answer: "no"


JSON_SHAPES: dict[str, str] = {
    "keygen": '{"id", "key_file", "manifest", "public_key"}',
    "node": '{"event": "ready", "id", "url", "pid"}, one line once it listens',
    "cluster init": '{"spec", "topology", "voters": [ID, ...], "spares": [ID, ...]}',
    "cluster up": '{"spec", "run_dir", "nodes": {ID: {"pid", "log"}}}',
    "cluster status": '[{"id", "backend", "role", "term", "leader", "commit", ...}, ...]',
    "cluster down": '{"run_dir", "nodes": {ID: "stopped" | "killed" | "not running"}}',
    "cluster add": '{"action": "added", "node", "voters", "learners", "conf_index"}',
    "cluster remove": '{"action": "removed", "node", "voters", "learners", "conf_index"}',
    "kv put": '{"op": "put", "key", "result": null}',
    "kv get": '{"op": "get", "key", "result": VALUE | null}',
    "kv cas": '{"op": "cas", "key", "result": true | false}  (false: exit 1)',
}
"""What ``--json`` prints on success, per command. Any failure under ``--json`` prints one
object ``{"error": CODE, "message": TEXT}`` on stdout instead (nothing on stderr) and exits
with the code of :data:`EXIT_CODES`; CODE is ``bad-input``, ``unavailable``,
``unauthenticated``, ``refused``, ``rejected`` (a command the machine refused),
``nothing-to-stop`` or a refused membership change's reason (``already-member``, …)."""

_JSON_ERRORS = (
    'on failure: {"error": CODE, "message"} on stdout, the exit code below; CODE:\n'
    "  bad-input, unavailable, unauthenticated, refused, rejected, nothing-to-stop,\n"
    "  or a membership change's reason (already-member, unknown-node, timeout, ...)"
)


def _error(as_json: bool, error: str, message: str, exit_code: int, human: str) -> int:
    """Report a failure: the ``human`` line on stderr, or under ``--json`` one object
    ``{"error": error, "message": message}`` on stdout (and nothing on stderr)."""
    if as_json:
        print(json.dumps({"error": error, "message": message}), flush=True)
    else:
        print(human, file=sys.stderr)
    return exit_code


_ERROR_NAMES = {EXIT_FAIL: "refused", EXIT_BAD_INPUT: "bad-input", EXIT_UNAVAILABLE: "unavailable"}


def run_runtime_command(args: argparse.Namespace, out: Console, err: Console) -> int:
    """Dispatch ``keygen``, ``node``, ``cluster …`` and ``kv …``."""
    from ..identity import IdentityError
    from .cluster import ClusterError, MembershipError
    from .spec import SpecError

    as_json = bool(getattr(args, "json", False))
    try:
        if args.command == "keygen":
            return _keygen(args, out)
        if args.command == "node":
            from .process import run_node_process

            return run_node_process(
                args.spec, args.id, args.machine, rejoin=args.rejoin, as_json=as_json
            )
        if args.command == "cluster":
            return _cluster(args, out)
        return _kv(args, out)
    except (SpecError, IdentityError) as exc:
        human = f"ruflo-consensus: error: {exc}"
        return _error(as_json, "bad-input", str(exc), EXIT_BAD_INPUT, human)
    except MembershipError as exc:
        code = EXIT_UNAVAILABLE if exc.reason in ("timeout", "unavailable") else EXIT_FAIL
        return _error(as_json, exc.reason, str(exc), code, f"ruflo-consensus: {exc}")
    except ClusterError as exc:
        name = _ERROR_NAMES.get(exc.exit_code, "error")
        return _error(as_json, name, str(exc), exc.exit_code, f"ruflo-consensus: {exc}")


def _keygen(args: argparse.Namespace, out: Console) -> int:
    """Write the key file where ``--out`` says, where ``--spec`` reads it, or in ./keys."""
    from ..identity import check_node_id, keygen, manifest_path
    from .spec import SpecError, load_spec

    check_node_id(args.id)
    if args.spec is not None:
        spec = load_spec(args.spec)
        client = spec.clients.get(args.id)
        if args.id in spec.key_files:
            path = spec.key_files[args.id]
        elif client is not None and client.key_file is not None:
            path = client.key_file
        else:
            raise SpecError(
                f"{args.spec}: {args.id!r} is neither a node nor a client with a key_file "
                f"(nodes: {', '.join(spec.ids)}; clients: {', '.join(spec.clients) or '-'})"
            )
    else:
        path = Path(args.out or f"keys/{args.id}.key")
    path = path.resolve()
    ident = keygen(args.id, path, overwrite=args.force)
    if args.json:
        shown = {
            "id": args.id,
            "key_file": str(path),
            "manifest": str(manifest_path(path)),
            "public_key": ident.public_key.hex(),
        }
        print(json.dumps(shown))
        return EXIT_OK
    print(f"wrote {path} (mode 0600) and {manifest_path(path)}")
    out.print(f"public key {ident.public_key.hex()}")
    return EXIT_OK


MAX_INIT_NODES = 64
"""The most nodes ``cluster init`` writes a spec for."""


def _cluster_init(args: argparse.Namespace, out: Console) -> int:
    """``cluster init DIR``: a spec for nodes on free ports of 127.0.0.1, with fresh keys."""
    from .localspec import write_local_spec
    from .spec import SpecError, load_spec

    if not 1 <= args.nodes <= MAX_INIT_NODES:
        raise SpecError(f"--nodes must be 1 to {MAX_INIT_NODES}, got {args.nodes}")
    if not 0 <= args.spares < args.nodes:
        raise SpecError(
            f"--spares must leave at least one voter: 0 to {args.nodes - 1}, got {args.spares}"
        )
    folder = Path(args.dir)
    target = folder / "cluster.toml"
    if target.exists() and not args.force:
        raise SpecError(f"{target}: a spec is already there (use --force to rewrite it)")
    ids = [f"n{i + 1}" for i in range(args.nodes)]
    spares = ids[len(ids) - args.spares :] if args.spares else []
    path = write_local_spec(
        folder,
        args.topology,
        args.nodes,
        node_extra={node_id: {"join": True} for node_id in spares},
        name=folder.resolve().name,
    )
    spec = load_spec(path)  # what was written loads, or this is our bug: say so loudly
    if args.json:
        print(
            json.dumps(
                {
                    "spec": str(path.resolve()),
                    "topology": args.topology,
                    "voters": list(spec.voters),
                    "spares": spares,
                }
            )
        )
        return EXIT_OK
    out.print(f"wrote {path.resolve()}: {args.nodes} {args.topology} nodes on 127.0.0.1")
    if spares:
        out.print(f"spares (join = true, for 'cluster add'): {', '.join(spares)}")
    out.print(f"next: ruflo-consensus cluster up {path}")
    return EXIT_OK


def _cluster(args: argparse.Namespace, out: Console) -> int:
    from .cluster import cluster_down, cluster_status, cluster_up, default_run_dir
    from .spec import SpecError

    if args.cluster == "init":
        return _cluster_init(args, out)
    if args.cluster == "up":
        only = [x for x in args.only.split(",") if x] if args.only else None
        run_dir = Path(args.dir) if args.dir else default_run_dir(args.spec)
        pids = cluster_up(args.spec, run_dir, only=only, machine=args.machine, rejoin=args.rejoin)
        logs = {node_id: run_dir.resolve() / "logs" / f"{node_id}.log" for node_id in pids}
        if args.json:
            nodes = {n: {"pid": pid, "log": str(logs[n])} for n, pid in pids.items()}
            spec_path = str(Path(args.spec).resolve())
            print(
                json.dumps({"spec": spec_path, "run_dir": str(run_dir.resolve()), "nodes": nodes})
            )
            return EXIT_OK
        for node_id, pid in pids.items():
            out.print(f"{node_id} running as pid {pid} (log {run_dir / 'logs' / node_id}.log)")
        return EXIT_OK
    if args.cluster == "down":
        if not Path(args.spec).is_file():
            raise SpecError(f"{args.spec}: no such spec file")
        run_dir = Path(args.dir) if args.dir else default_run_dir(args.spec)
        outcome = cluster_down(run_dir)
        if not any(how in ("stopped", "killed") for how in outcome.values()):
            for node_id, how in outcome.items():
                if not args.json:
                    out.print(f"{node_id}: {how}")
            message = (
                f"nothing to stop: no running node is recorded in "
                f"{run_dir.resolve() / 'cluster.json'}"
            )
            human = f"ruflo-consensus: {message}"
            return _error(args.json, "nothing-to-stop", message, EXIT_FAIL, human)
        if args.json:
            print(json.dumps({"run_dir": str(run_dir.resolve()), "nodes": outcome}))
            return EXIT_OK
        for node_id, how in outcome.items():
            out.print(f"{node_id}: {how}")
        return EXIT_OK
    if args.cluster in ("add", "remove"):
        return _membership(args, out)
    statuses = cluster_status(args.spec, identity=_client_key(args))
    if args.json:
        print(json.dumps(statuses))
    elif out.is_terminal:
        out.print(render_status(statuses))
    else:
        print(render_status_text(statuses), end="")
    return EXIT_OK if all("error" not in s for s in statuses) else EXIT_FAIL


def _membership(args: argparse.Namespace, out: Console) -> int:
    """``cluster add`` (with a progress bar while the learner catches up) and ``remove``.

    A refusal or a timeout raises :class:`~.cluster.MembershipError` (exit 1).
    """
    import trio
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .cluster import add_member, remove_member
    from .spec import load_spec

    spec = load_spec(args.spec)
    spec.check_node(args.node)
    identity = _client_key(args)
    node = args.node
    if args.cluster == "remove":
        conf = trio.run(lambda: remove_member(spec, node, timeout=args.timeout, identity=identity))
        action = "removed"
    else:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        progress = Progress(*columns, TimeElapsedColumn(), console=out, disable=args.json)
        with progress:
            task = progress.add_task(f"{node}: entries replicated", total=None)

            def show(match: int, last: int) -> None:
                progress.update(task, completed=match, total=max(last, 1))

            conf = trio.run(
                lambda: add_member(
                    spec, node, timeout=args.timeout, identity=identity, on_progress=show
                )
            )
        action = "added"
    if args.json:
        shown = {"action": action, "node": node}
        shown.update({k: conf[k] for k in ("voters", "learners", "conf_index")})
        print(json.dumps(shown))
        return EXIT_OK
    out.print(f"removed {node}" if action == "removed" else f"added {node} as a voter")
    voters = ", ".join(conf["voters"])
    learners = ", ".join(conf["learners"]) or "-"
    out.print(f"voters: {voters}; learners: {learners} (configuration entry {conf['conf_index']})")
    return EXIT_OK


def _client_key(args: argparse.Namespace) -> Any:
    """The identity ``--key FILE`` names (None: the spec's default client key)."""
    if getattr(args, "key_file", None) is None:
        return None
    from ..identity import load_key_file

    return load_key_file(args.key_file)


def render_status(statuses: list[dict[str, Any]]) -> Table:
    """The ``cluster status`` table: one row per node."""
    from .cluster import membership_roles

    members = membership_roles(statuses)
    shown = {"voter": "voter", "learner": "learner", "none": "not a member"}
    table = Table(title="cluster status")
    cols = (
        "node",
        "backend",
        "role",
        "member",
        "term",
        "leader",
        "commit",
        "applied",
        "links",
        "rejected",
    )
    for col in cols:
        table.add_column(col, justify="right" if col in ("term", "commit", "applied") else "left")
    for s in statuses:
        member = shown.get(members[s["id"]], members[s["id"]])
        if s.get("rejoining"):
            member += " (rejoining: lost its state, does not vote)"
        if "error" in s:
            table.add_row(s["id"], "", "[red]down[/red]", member, "", "", "", "", s["error"], "")
            continue
        links = " ".join(
            f"{ln['peer']}:{'[green]up[/green]' if ln['connected'] else '[red]down[/red]'}"
            + (f"({ln['dropped']} dropped)" if ln["dropped"] else "")
            for ln in s["links"]
        )
        rejected = ", ".join(f"{k}={v}" for k, v in s["rejected"].items()) or "-"
        role = f"[bold]{s['role']}[/bold]" if s["role"] == "leader" else s["role"]
        table.add_row(
            s["id"],
            str(s.get("backend", "?")),
            role,
            member,
            str(s["term"]),
            str(s["leader"] or "-"),
            str(s["commit"]),
            str(s["applied"]),
            links or "-",
            rejected,
        )
    return table


def render_status_text(statuses: list[dict[str, Any]]) -> str:
    """``cluster status`` for a pipe or a file: the table's columns, aligned, without
    borders or colours, one line per node (never wrapped) under one header line."""
    import io

    table = render_status(statuses)
    table.title = None
    table.box = None
    console = Console(file=io.StringIO(), width=100_000, color_system=None, highlight=False)
    console.print(table)
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    return "".join(line.rstrip() + "\n" for line in lines if line.strip())


def _kv(args: argparse.Namespace, out: Console) -> int:
    import trio

    from ..statemachine import CommandRejected
    from .client import ClientError, ClusterClient
    from .spec import load_spec

    spec = load_spec(args.spec)
    fields: dict[str, Any]
    if args.kv == "get":
        op, fields = "read", {"query": {"op": "get", "key": args.key}}
    else:
        command: dict[str, Any] = {"op": args.kv, "key": args.key}
        if args.kv == "put":
            command["value"] = args.value
        else:
            command.update(old=args.old, new=args.new)
        # a fresh session: a retry on another node is applied at most once
        fields = {"command": command, "client": f"cli-{secrets.token_hex(8)}", "seq": 1}
        op = "submit"
    client = ClusterClient(spec, args.node, identity=_client_key(args))
    try:
        _node, result = trio.run(lambda: client.call(op, args.timeout, **fields))
    except ClientError as exc:
        human = f"ruflo-consensus kv: {exc}"
        if exc.code in _REFUSALS:
            return _error(args.json, exc.code.lower(), str(exc), EXIT_FAIL, human)
        return _error(args.json, "unavailable", str(exc), EXIT_UNAVAILABLE, human)
    if isinstance(result, CommandRejected):
        message = f"rejected: {result.code}: {result.message}"
        human = f"ruflo-consensus kv: {message}"
        return _error(args.json, "rejected", message, EXIT_BAD_INPUT, human)
    if args.json:
        print(json.dumps({"op": args.kv, "key": args.key, "result": result}))
    else:
        print(json.dumps(result))
    if args.kv == "cas" and result is False:
        return EXIT_FAIL  # the value was not OLD: nothing changed
    return EXIT_OK
