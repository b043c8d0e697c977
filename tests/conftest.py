"""Shared fixtures for the whole test suite."""

from __future__ import annotations

import uuid

import pytest

pytest_plugins = ["tests.fixtures.mqtt"]


@pytest.fixture
def unique_id() -> str:
    """A short id unique to this test run, for LSL source ids and MQTT rig names."""
    return uuid.uuid4().hex[:10]
