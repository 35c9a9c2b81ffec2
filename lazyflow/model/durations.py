"""Durations as users write them: seconds, ``"45s"``, ``"30m"``, ``"1h"``, ``"2d"``, timedeltas."""

from __future__ import annotations

import datetime
import math
from typing import Any

__all__ = ["seconds"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def seconds(value: Any) -> float | None:
    """``value`` in seconds, or ``None`` when it is not a positive duration.

    >>> seconds("1.5h"), seconds(90), seconds("soon")
    (5400.0, 90.0, None)
    """
    found: float | None = None
    if isinstance(value, datetime.timedelta):
        found = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        found = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        try:
            found = float(text[:-1]) * _UNITS[text[-1]] if text[-1:] in _UNITS else float(text)
        except ValueError:
            found = None
    return found if found is not None and 0 < found < math.inf else None
