"""The tutorials run under nbval; their kernels inherit this process's environment.

A notebook using the default cache would write ``notebooks/.lazyflow``: point
the default disk tier at a fresh temporary directory instead, so runs of the
suite neither litter the repository nor see each other's entries.
"""

from __future__ import annotations

import os
import tempfile

import pytest


def pytest_configure(config: pytest.Config) -> None:
    os.environ["LAZYFLOW_CACHE_DIR"] = tempfile.mkdtemp(prefix="lazyflow-nbval-")
