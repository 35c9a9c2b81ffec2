"""Node options: one typed record, every option with its default and validation."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

import lazyflow as lf
from lazyflow.model.options import DEFAULT, NAMES, NodeOptions


def test_a_node_declared_without_options_shares_the_default_record(flow):
    @flow.node
    def plain():
        return 1

    assert flow["plain"].options is DEFAULT


def test_options_are_read_by_attribute_and_cannot_be_changed(flow):
    @flow.node(retries=2, deterministic=False)
    def flaky():
        return 1

    options = flow["flaky"].options
    assert (options.retries, options.deterministic, options.timeout) == (2, False, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.retries = 3  # type: ignore[misc]


def test_an_unknown_option_names_the_node_and_lists_every_valid_one(flow):
    with pytest.raises(lf.DefinitionError, match=r"node 'f': unknown option\(s\) retires; "
                                                 r"valid: name, version, cache, inputs, outputs"):
        @flow.node(retires=2)
        def f():
            return 1


def test_deterministic_must_be_a_boolean(flow):
    with pytest.raises(lf.DefinitionError, match="node 'f': deterministic= must be True or False"):
        @flow.node(deterministic="no")
        def f():
            return 1


def test_declared_gives_only_what_differs_from_the_defaults():
    assert NodeOptions.of("f", {"retries": 1, "timeout": None}).declared() == {"retries": 1}


def test_the_valid_options_do_not_depend_on_what_was_imported():
    code = "from lazyflow.model.options import NAMES; print(','.join(NAMES))"
    alone = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.strip()
    assert alone.split(",") == list(NAMES)
    assert "deterministic" in NAMES
