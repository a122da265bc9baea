"""Embed ruflo-consensus nodes in a program: a trio program, then an asyncio one.

Run it: ``python examples/embedded_kv.py``. It writes a throw-away 3-node spec (free ports
on 127.0.0.1, fresh keys) into a temporary folder, so it needs nothing else. In a real
deployment each process runs one node of a shared spec file (see docs/embedding.md).
"""

from __future__ import annotations

import asyncio
import tempfile
from contextlib import AsyncExitStack

import trio

from ruflo_consensus.runtime import BlockingNode, open_node, write_local_spec
from ruflo_consensus.statemachine import KVStateMachine


async def trio_program(spec_path: str) -> None:
    """Three nodes in one trio program; any of them takes writes and reads."""
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(open_node(spec_path, node_id, KVStateMachine()))
            for node_id in ("n1", "n2", "n3")
        ]
        await nodes[0].submit({"op": "put", "key": "a", "value": "1"})
        value = await nodes[2].read({"op": "get", "key": "a"})
        print(f"trio: a = {value}")


async def asyncio_program(nodes: list[BlockingNode]) -> None:
    """An asyncio service talks to the blocking facade through worker threads."""
    for i in range(1, 4):
        await asyncio.to_thread(nodes[i % 3].submit, {"op": "put", "key": "c", "value": str(i)})
    value = await asyncio.to_thread(nodes[0].read, {"op": "get", "key": "c"})
    print(f"asyncio: counter = {value}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # durable (the default): the blocking nodes below reopen the WALs the trio program
        # wrote (memory storage would refuse: a node that lost its state must not vote)
        spec = str(write_local_spec(tmp, "mesh", 3))
        trio.run(trio_program, spec)
        nodes = [BlockingNode(spec, n, KVStateMachine()).start() for n in ("n1", "n2", "n3")]
        try:
            asyncio.run(asyncio_program(nodes))
        finally:
            for node in nodes:
                node.close()


if __name__ == "__main__":
    main()
