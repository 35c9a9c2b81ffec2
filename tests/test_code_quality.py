"""The code itself: strict typing for the core modules, a clean lint for everything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STRICT = ["lazyflow/hashing.py", "lazyflow/options.py", "lazyflow/fingerprint.py", "lazyflow/keys.py",
          "lazyflow/bytecode.py", "lazyflow/origin.py", "lazyflow/weakmemo.py",
          "lazyflow/environment.py", "lazyflow/_version.py", "lazyflow/__init__.py",
          "lazyflow/graph.py", "lazyflow/api.py", "lazyflow/engine.py", "lazyflow/flights.py",
          "lazyflow/run.py",
          "lazyflow/cache", "lazyflow/hashers"]


@pytest.mark.slow
def test_the_core_modules_pass_strict_mypy(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
         "--cache-dir", str(tmp_path), *STRICT],
        cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_package_and_tests_pass_ruff():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "lazyflow", "tests"],
                            cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
