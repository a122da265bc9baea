"""One node as an operating-system process: ``ruflo-consensus node --spec FILE --id NODE``.

The process loads the spec, its key file (refusing one others can read) and the peers'
manifests, opens its WAL, and runs the node until SIGTERM or SIGINT, which stop it
cleanly (exit 0). A crash of any node task ends the process with exit code 1 and the
traceback in its log: a node is never left half-alive.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path

import trio

from ..identity import IdentityError
from ..statemachine import KVStateMachine, RegisterStateMachine, StateMachine
from ..storage import StorageError
from .embed import build_node
from .errors import NodeError
from .spec import SpecError, load_spec

__all__ = ["MACHINES", "main", "run_node_process"]

MACHINES: dict[str, type[StateMachine]] = {"kv": KVStateMachine, "register": RegisterStateMachine}


class StartupError(Exception):
    """The node cannot start (bad spec, key file, manifest or storage)."""


async def _serve(spec_path: str, node_id: str, machine: str, rejoin: bool, as_json: bool) -> None:
    spec = load_spec(spec_path)
    node = build_node(spec, node_id, MACHINES[machine](), rejoin=rejoin)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            url = spec.endpoints[node_id].url()
            if as_json:
                ready = {"event": "ready", "id": node_id, "url": url, "pid": os.getpid()}
                print(json.dumps(ready), flush=True)
            else:
                print(f"{node_id} ready on {url}", flush=True)
            async for signum in signals:
                logging.getLogger("ruflo_consensus.runtime").info(
                    "%s stopping on %s", node_id, signal.Signals(signum).name
                )
                nursery.cancel_scope.cancel()
                break


def _refuse(message: str, as_json: bool, error: str = "bad-input") -> None:
    """Say why the node stops: a line on stderr, or under ``--json`` an error object."""
    if as_json:
        print(json.dumps({"error": error, "message": message}), flush=True)
    else:
        print(
            f"ruflo-consensus node: {'error: ' if error == 'bad-input' else ''}{message}",
            file=sys.stderr,
        )


def run_node_process(
    spec_path: str | Path,
    node_id: str,
    machine: str = "kv",
    *,
    rejoin: bool = False,
    as_json: bool = False,
) -> int:
    """Run one node in this process until a signal; return the exit code.

    ``rejoin``: a node that saved state once and lost it starts as a spare (see
    :class:`~.node.Node`) instead of refusing to start (exit 2). ``as_json``: print
    ``{"event": "ready", "id", "url", "pid"}`` once it listens, and a refusal to start as
    ``{"error": "bad-input", "message"}``, on stdout.
    """
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if machine not in MACHINES:
        _refuse(f"unknown machine {machine!r}", as_json)
        return 2
    try:
        trio.run(_serve, str(spec_path), node_id, machine, rejoin, as_json)
    except (SpecError, IdentityError, NodeError, StorageError) as exc:
        _refuse(str(exc), as_json)
        return 2
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if all(
            isinstance(e, SpecError | IdentityError | NodeError | StorageError | OSError)
            for e in leaves
        ):
            _refuse("; ".join(str(e) for e in leaves), as_json)
            return 2
        logging.getLogger("ruflo_consensus.runtime").exception("%s crashed", node_id)
        if as_json:
            _refuse(f"{node_id} crashed (the traceback is on stderr)", as_json, "crashed")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m ruflo_consensus.runtime.process --spec FILE --id NODE``.

    The same as ``ruflo-consensus node``, without loading the simulator and the rest of
    the command line first (``cluster up`` starts nodes this way: start-up is faster).
    """
    import argparse

    parser = argparse.ArgumentParser(prog="ruflo-consensus node")
    parser.add_argument("--spec", required=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--machine", default="kv", choices=sorted(MACHINES))
    parser.add_argument("--rejoin", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    return run_node_process(args.spec, args.id, args.machine, rejoin=args.rejoin, as_json=args.json)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


if __name__ == "__main__":
    sys.exit(main())
