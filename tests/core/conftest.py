"""Settings for the core tests: the switch that rewrites data-driven expected output."""

from __future__ import annotations

import pytest

from tests.helpers.datadriven import rewrite_requested


def pytest_addoption(parser: pytest.Parser) -> None:
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
