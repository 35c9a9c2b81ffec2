"""mkdocs hooks: the site's home page is README.md.

One text, never two that disagree: docs/index.md is a placeholder whose content this
hook replaces with README.md. README's paths are relative to the repository (it names
a guide as ``docs/caching.md``) while the guides sit beside the home page, so a link
``](docs/X)`` becomes ``](X)`` and a code span naming a guide (`` `docs/concepts.md` ``,
as in README's table) becomes a link to it. Strict mode then checks those links like
any other: README naming a guide that does not exist fails the build.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

LINK = re.compile(r"\]\(docs/")
GUIDE_SPAN = re.compile(r"`docs/(?P<page>[\w./-]+\.md)(?P<anchor>#[\w-]+)?`")


def on_page_markdown(markdown: str, *, page: Any, config: Any, **kwargs: Any) -> str:
    """The home page: README.md, its repository paths pointed at the site's pages."""
    if page.file.src_uri != "index.md":
        return markdown
    readme = Path(config.config_file_path).parent / "README.md"
    text = LINK.sub("](", readme.read_text(encoding="utf-8"))
    return GUIDE_SPAN.sub(lambda m: f"[`{m['page']}`]({m['page']}{m['anchor'] or ''})", text)
