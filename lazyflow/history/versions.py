"""The environment a run recorded: Python, platform, lazyflow, and the packages its code uses.

Package versions come from the nodes' code fingerprints (``name==version``
components), so only the packages that matter to the run are listed, and
nothing is imported or looked up to find them.
"""

from __future__ import annotations

import platform
import re
import sys
from collections.abc import Mapping
from typing import Any

from lazyflow._version import __version__

__all__ = ["environment"]

_ENVIRONMENT: dict[str, Any] = {}
_PACKAGE = re.compile(r"^([A-Za-z_][\w.]*)==([^\s=]+)$")


def environment(code: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """Python, platform, lazyflow, and ``package: version`` for packages the code uses.

    ``code`` maps node names to their fingerprint components (``Run.code``).

    >>> environment({"fit": {"np": "numpy==2.0.1"}})["packages"]
    {'numpy': '2.0.1'}
    """
    if not _ENVIRONMENT:
        # uname's system, release and machine, not platform.platform(): that asks for
        # the processor too, which runs `uname -p` in a subprocess (2 ms of a request)
        uname = platform.uname()
        _ENVIRONMENT.update(python=platform.python_version(),
                            platform=f"{uname.system}-{uname.release}-{uname.machine}",
                            implementation=sys.implementation.name, lazyflow=__version__)
    packages: dict[str, str] = {}
    for components in code.values():
        packages.update(_packages(components))
    return {**_ENVIRONMENT, "packages": dict(sorted(packages.items()))}


_PACKAGES_SEEN: dict[int, tuple[Mapping[str, str], dict[str, str]]] = {}


def _packages(components: Mapping[str, str]) -> dict[str, str]:
    """Packages named in one fingerprint's components (memoised: fingerprints are reused)."""
    seen = _PACKAGES_SEEN.get(id(components))
    if seen is not None and seen[0] is components:
        return seen[1]
    found: dict[str, str] = {}
    for token in components.values():
        match = _PACKAGE.match(token) if "==" in token else None
        if match and not match.group(2).startswith("py"):
            found[match.group(1).partition(".")[0]] = match.group(2)
    if len(_PACKAGES_SEEN) > 4096:
        _PACKAGES_SEEN.clear()
    _PACKAGES_SEEN[id(components)] = (components, found)
    return found
