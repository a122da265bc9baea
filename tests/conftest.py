"""Shared fixtures and settings for the whole suite.

The tests are grouped by layer (``core``, ``sim``, ``storage``, ``runtime``,
``federation``, ``check``, ``cli``); the harnesses they share live in
:mod:`tests.helpers`. Fixtures used by more than one layer are defined here.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from tests.helpers.datadriven import rewrite_requested

# CI machines are shared and slow: no Hypothesis deadline there (a deadline is a timed
# assertion in disguise), and no health check that fails a test for being slow.
settings.register_profile(
    "ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
if os.environ.get("CI"):
    settings.load_profile("ci")


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--rewrite-testdata``: regenerate data-driven expected output (tests/core/testdata)."""
    parser.addoption(
        "--rewrite-testdata",
        action="store_true",
        default=False,
        help="write the actual output of data-driven tests (tests/core/testdata) back into "
        "their files instead of comparing; review the result with git diff",
    )


@pytest.fixture
def rewrite_testdata(request: pytest.FixtureRequest) -> bool:
    """True when expected outputs are to be rewritten (option or RUFLO_REWRITE_TESTDATA=1)."""
    return rewrite_requested(bool(request.config.getoption("--rewrite-testdata")))
