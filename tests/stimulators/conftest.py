"""Fixtures of the stimulation tests (helpers live in ``helpers.py``)."""

from __future__ import annotations

import pytest


@pytest.fixture
def rig_name(unique_id: str) -> str:
    """A rig name unique to the test, so topics never collide."""
    return f"t{unique_id}"
