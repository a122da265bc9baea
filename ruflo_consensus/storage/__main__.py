"""``python -m ruflo_consensus.storage DIR [--entries N] …``: run :func:`bench_reopen`."""

from __future__ import annotations

from .bench import main

if __name__ == "__main__":
    raise SystemExit(main())
