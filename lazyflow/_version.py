"""The package's version: the single source every stamp and report reads.

Read from the installed distribution's metadata, so it is what ``pyproject.toml``
said when the package was installed (an editable install included). A source
tree on ``sys.path`` that was never installed gets :data:`UNKNOWN`, a valid
PEP 440 version that no release has.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["UNKNOWN", "__version__"]

UNKNOWN = "0+unknown"

try:
    __version__: str = version("lazyflow")
except PackageNotFoundError:  # a source checkout used without installing it
    __version__ = UNKNOWN
