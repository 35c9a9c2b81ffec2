"""The lazyflow version, in one place: the package, the CLI, run history and cache metadata."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
"""This lazyflow's version (``pyproject.toml`` spells the same; ``tests/test_keys.py``
checks that they agree)."""
