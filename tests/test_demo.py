"""The demo of ``make demo`` tells the truth: its cleaning removes the outliers it planted,
and its fit finds the trend it simulated."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import lazyflow as lf

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.py"


@pytest.fixture
def demo(tmp_path):
    spec = importlib.util.spec_from_file_location("lazyflow_demo", DEMO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.flow.cache = lf.Cache(disk=None)  # nothing written beside the tests
    return module


def test_the_demos_cleaning_removes_the_outliers_it_planted(demo):
    measurements = demo.flow.get("measurements")
    cleaned = demo.flow.get("cleaned")
    removed = len(measurements) - len(cleaned)
    assert 0.008 * len(measurements) < removed < 0.02 * len(measurements)  # ~1% planted
    assert cleaned[:, 1].max() < measurements[:, 1].max() - 20


def test_the_demos_fit_finds_the_simulated_trend(demo):
    np.testing.assert_allclose(demo.flow.get("fit"), [0.5, -2.0, 3.0], atol=0.05)
