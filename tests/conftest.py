"""Shared fixtures: flows with isolated caches, and a call counter that keys ignore."""

from __future__ import annotations

from collections import Counter

import pytest

import lazyflow as lf


class Calls(Counter):
    """Counts node executions; hashes to a constant so reading it never invalidates a node."""


lf.register_hasher(Calls, lambda calls: "calls")


@pytest.fixture
def calls() -> Calls:
    """A fresh execution counter: ``calls["node"]`` is how often it ran."""
    return Calls()


@pytest.fixture
def flow() -> lf.Flow:
    """A flow whose cache lives in memory only (no disk, no remote)."""
    return lf.Flow("test", cache=lf.Cache(disk=None))
