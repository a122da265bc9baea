"""``open_node``: what the ``async with`` block raises comes out of it as itself.

Before, a ``SubmitTimeout`` the block did not catch came out wrapped in the node's
nursery's ``ExceptionGroup``, so ``except SubmitTimeout`` around the block (or around
``trio.run``) missed it and the program ended in a traceback. Nodes run in this process;
everything binds 127.0.0.1.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio

from ruflo_consensus.runtime import SubmitTimeout, open_node
from ruflo_consensus.statemachine import KVStateMachine
from tests.helpers.runtime_helpers import local_spec


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def test_a_submit_timeout_leaves_the_block_as_itself(tmp_path: Path) -> None:
    spec = local_spec(tmp_path)  # n2 and n3 never start: no quorum
    with pytest.raises(SubmitTimeout):
        async with open_node(spec, "n1", KVStateMachine()) as node:
            await node.submit({"op": "put", "key": "a", "value": "1"}, timeout=0.5)
    assert _port_free(spec.endpoints["n1"].port)  # the node stopped


async def test_any_error_of_the_block_leaves_it_as_itself(tmp_path: Path) -> None:
    spec = local_spec(tmp_path)
    with pytest.raises(KeyError, match="mine"):
        async with open_node(spec, "n1", KVStateMachine()):
            raise KeyError("mine")


async def test_an_outer_cancel_scope_still_cancels_the_block(tmp_path: Path) -> None:
    spec = local_spec(tmp_path)
    with trio.move_on_after(0.3) as scope:
        async with open_node(spec, "n1", KVStateMachine()):
            await trio.sleep(30)
    assert scope.cancelled_caught
