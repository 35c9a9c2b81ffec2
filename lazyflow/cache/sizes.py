"""Human sizes ("500MB", "2GB", 1_000_000) to bytes, and back."""

from __future__ import annotations

import re

__all__ = ["format_size", "parse_size"]

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(size: int | float | str, *, what: str = "size") -> int:
    """Parse ``"500MB"``, ``"2GB"``, ``"1.5GiB"`` or a number of bytes.

    >>> parse_size("2GB")
    2000000000
    """
    if isinstance(size, bool):
        raise ValueError(f"{what} must be bytes or a string like '2GB', got {size!r}")
    if isinstance(size, (int, float)):
        if size < 0:
            raise ValueError(f"{what} must not be negative, got {size!r}")
        return int(size)
    match = _PATTERN.match(str(size))
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(
            f"{what} {size!r} is not a size: use bytes or a number with one of "
            "B, KB, MB, GB, TB, KiB, MiB, GiB, TiB (e.g. '500MB')")
    return int(float(match.group(1)) * _UNITS[unit])


def format_size(nbytes: float) -> str:
    """Format bytes for people: ``format_size(2_500_000) == '2.5 MB'``."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(nbytes) < 1000 or unit == "TB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    raise AssertionError("unreachable")
