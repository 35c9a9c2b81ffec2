"""The code itself: strict typing for the whole package, a clean lint for everything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_whole_package_passes_strict_mypy(tmp_path):
    # pyproject.toml's [tool.mypy]: strict for every module, files = lazyflow, and narrow
    # overrides where IPython, ipywidgets and nbformat are untyped
    result = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_package_and_tests_pass_ruff():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "lazyflow", "tests"],
                            cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
