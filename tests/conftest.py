"""Shared fixtures and settings for the whole suite.

The tests are grouped by layer (``core``, ``sim``, ``storage``, ``runtime``,
``federation``, ``check``, ``cli``); the harnesses they share live in
:mod:`tests.helpers`. Fixtures used by more than one layer are defined here.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# CI machines are shared and slow: no Hypothesis deadline there (a deadline is a timed
# assertion in disguise), and no health check that fails a test for being slow.
settings.register_profile(
    "ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
if os.environ.get("CI"):
    settings.load_profile("ci")
