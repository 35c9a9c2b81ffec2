"""The converter behind the command line's ``-p name=value``: text to the annotated type."""

from __future__ import annotations

import enum
import inspect
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

import pytest

from lazyflow.model.convert import ConversionError, annotation_of, convert

EMPTY = inspect.Parameter.empty


class Mode(enum.Enum):
    FAST = "f"
    SLOW = "s"


class Point:
    """A class of the user's, which the converter cannot judge."""


# --------------------------------------------------------------------------- booleans


@pytest.mark.parametrize("text", ["true", "True", "TRUE", "yes", "Yes", "1"])
def test_true_words_give_true(text):
    assert convert(text, bool) is True


@pytest.mark.parametrize("text", ["false", "False", "FALSE", "no", "No", "0"])
def test_false_words_give_false_never_a_true_string(text):
    assert convert(text, bool) is False


def test_any_other_word_for_a_bool_says_which_words_are_taken():
    with pytest.raises(ConversionError, match=r"'maybe' is not a bool \(true/false, yes/no, "
                       r"1/0\)"):
        convert("maybe", bool)


# --------------------------------------------------------------------------- scalars and paths


def test_int_float_str_and_path_use_their_constructors():
    assert convert("10", int) == 10
    assert convert("1e3", float) == 1000.0
    assert convert("10", str) == "10"
    assert convert("data/a.csv", Path) == Path("data/a.csv")


def test_an_int_parameter_refuses_a_fraction():
    with pytest.raises(ConversionError, match="'2.5' is not an int"):
        convert("2.5", int)


# --------------------------------------------------------------------------- unions and literals


# users still write Optional[...] and Union[...]: both spellings are converted
def test_optional_reads_none_and_the_type():
    assert convert("None", Optional[int]) is None  # noqa: UP045
    assert convert("none", int | None) is None
    assert convert("3", Optional[int]) == 3  # noqa: UP045


def test_a_union_tries_its_str_member_last():
    assert convert("3", Union[str, int]) == 3  # noqa: UP007
    assert convert("three", str | int) == "three"


def test_a_union_nothing_converts_to_names_every_member():
    with pytest.raises(ConversionError, match="'x' is not an int or a float or None"):
        convert("x", int | float | None)


def test_a_literal_takes_its_values_by_spelling():
    assert convert("slow", Literal["fast", "slow"]) == "slow"
    assert convert("2", Literal[1, 2]) == 2


def test_a_literal_refuses_other_values_listing_the_allowed_ones():
    with pytest.raises(ConversionError, match="'medium' is not one of 'fast', 'slow'"):
        convert("medium", Literal["fast", "slow"])


# --------------------------------------------------------------------------- enums


def test_an_enum_member_is_given_by_name():
    assert convert("SLOW", Mode) is Mode.SLOW
    assert convert("Mode.FAST", Mode) is Mode.FAST


def test_an_enum_refuses_a_value_or_unknown_name_listing_the_names():
    with pytest.raises(ConversionError, match=r"'s' is not a Mode \(one of FAST, SLOW\)"):
        convert("s", Mode)


# --------------------------------------------------------------------------- containers


def test_containers_come_from_python_literals():
    assert convert("[1, 2]", list[int]) == [1, 2]
    assert convert("[1, 2]", tuple[int, ...]) == (1, 2)
    assert convert("{'a': 1}", dict[str, int]) == {"a": 1}


def test_bare_comma_separated_values_make_a_sequence():
    assert convert("1, 2", list[int]) == [1, 2]


def test_a_container_refuses_text_that_is_not_its_literal():
    with pytest.raises(ConversionError, match=r"'a.csv' is not a list literal such as \[1, 2\]"):
        convert("a.csv", list)


# --------------------------------------------------------------------------- no annotation


def test_without_an_annotation_a_python_literal_is_read_else_the_text():
    assert convert("10", EMPTY) == 10
    assert convert("[1, 2]", EMPTY) == [1, 2]
    assert convert("a.csv", EMPTY) == "a.csv"


def test_an_annotation_the_converter_does_not_know_keeps_the_literal_rule():
    assert convert("3", Point) == 3


def test_annotated_converts_as_its_type():
    assert convert("4", Annotated[int, "rows"]) == 4


# --------------------------------------------------------------------------- annotations


def test_string_annotations_are_resolved_with_get_type_hints():
    def node(n: int, mode: Mode | None, ks: list[int]):  # strings: this module is
        ...                                               # `from __future__ import annotations`

    assert isinstance(inspect.signature(node).parameters["n"].annotation, str)
    assert annotation_of(node, "n") is int
    assert annotation_of(node, "mode") == Mode | None
    assert annotation_of(node, "ks") == list[int]


def test_an_annotation_naming_something_undefined_is_judged_as_none():
    def node(n: int, frame: pd.DataFrame):  # noqa: F821 - pd is not imported here
        ...

    assert annotation_of(node, "n") is int
    assert annotation_of(node, "frame") is EMPTY


def test_a_bool_or_enum_default_stands_in_for_a_missing_annotation():
    def node(verbose=False, mode=Mode.FAST, n=3):
        ...

    assert annotation_of(node, "verbose") is bool
    assert annotation_of(node, "mode") is Mode
    assert annotation_of(node, "n") is EMPTY
