"""A griffe extension: lazyflow's reStructuredText-flavoured docstrings, read as Markdown.

mkdocs.yml loads it into mkdocstrings' Python handler. lazyflow's docstrings are
prose with ``double backticks`` (a code span in Markdown too), Sphinx roles
(``:class:`~lazyflow.Flow```) and doctest examples (``>>>``). Markdown would print a
role's colons and backticks and run an example's lines into one paragraph, so before
a docstring is parsed this extension

- turns each role into an *optional* cross-reference: a link where the site documents
  the target, plain code otherwise. Roles in the docstrings also name private helpers
  and relative names (``:meth:`run```), which no page documents: a required reference
  would fail the strict build on every one of them. Broken links and unresolved
  ``[title][lazyflow.Name]`` references in the pages still fail it.
- fences each doctest block as a ``pycon`` code block, leaving out ``# doctest:``
  directives (they are for the test runner, tests/test_docstrings.py).

The docstrings themselves are not changed: only griffe's in-memory copy.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|data|mod|exc|obj|const):`(?P<text>[^`]+)`")
"""A Sphinx role: ``:class:`~lazyflow.Flow```, ``:meth:`title <Flow.run>```..."""

DIRECTIVE = re.compile(r"\s*#\s*doctest:.*$")
"""A doctest directive comment at the end of an example line."""


class RstDocstrings(griffe.Extension):
    """Rewrite roles and doctest blocks of every docstring once the package is loaded."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Convert the object's docstring (aliases share their target's docstring)."""
        if obj.docstring is not None:
            text = fence_doctests(obj.docstring.value)
            obj.docstring.value = ROLE.sub(lambda m: _reference(obj, m["text"]), text)


def fence_doctests(text: str) -> str:
    """Wrap each run of ``>>>`` lines (with their output, up to a blank line) in a fence."""
    out: list[str] = []
    indent: str | None = None  # the open block's indentation, None outside a block
    fenced = False  # inside a Markdown fence the docstring wrote itself
    for line in text.splitlines():
        stripped = line.lstrip()
        if indent is None and stripped.startswith("```"):
            fenced = not fenced
        elif indent is None and not fenced and stripped.startswith(">>>"):
            indent = line[: len(line) - len(stripped)]
            if out and out[-1].strip():
                out.append("")  # a fence must start a block
            out.append(f"{indent}```pycon")
        elif indent is not None and not stripped:
            out.append(f"{indent}```")
            indent = None
        if indent is not None:
            line = DIRECTIVE.sub("", line)
        out.append(line)
    if indent is not None:
        out.append(f"{indent}```")
    return "\n".join(out)


def _reference(obj: griffe.Object, text: str) -> str:
    """A role's text as an optional cross-reference (a link when the site has the target)."""
    title, _, target = text.partition(" <")
    if target:  # :class:`title <target>`
        target = target.rstrip(">")
    else:
        target = title.lstrip("~")
        title = target.rsplit(".", 1)[-1] if title.startswith("~") else target
    identifier = _qualified(obj, target.lstrip("."))
    if "." not in identifier:  # a builtin, or a name not found in scope: nothing to link to
        return f"<code>{title}</code>"
    return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'


def _qualified(obj: griffe.Object, target: str) -> str:
    """The target's full path, looking a relative name up from the docstring's scope out."""
    if target.startswith("lazyflow."):
        return target
    head, _, rest = target.partition(".")
    scope: griffe.Object | None = obj
    while scope is not None:
        member = scope.members.get(head)
        if member is not None:
            try:
                path = member.canonical_path  # an imported name: where it is defined
            except griffe.AliasResolutionError:
                path = member.path
            return f"{path}.{rest}" if rest else path
        scope = scope.parent
    return target
