"""The documentation site (mkdocs.yml) builds in strict mode, and strict mode means it.

The site is built as a user would build it, ``python -m mkdocs build --strict`` in a
subprocess, into a temporary folder. The tests of what strict mode refuses build a small
site of two pages under the project's own settings (plugins, validation, hooks, the
docstring extension) with one fault each: that a fault fails the build is a property of
mkdocs.yml, which these tests hold.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import lazyflow

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "mkdocs.yml"
API_PAGES = sorted((ROOT / "docs" / "api").glob("*.md"))


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """``mkdocs build --strict`` of ``config`` into ``site``, as a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
         "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's site, built once for this module's tests."""
    folder = tmp_path_factory.mktemp("site")
    result = _build(CONFIG, folder)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder


def _page(site: Path, name: str) -> str:
    return (site / name / "index.html").read_text(encoding="utf-8")


# ------------------------------------------------------------------------ the project's site


@pytest.mark.slow
def test_the_site_builds_in_strict_mode_with_every_guide_and_api_page(site):
    guides = {p.stem for p in (ROOT / "docs").glob("*.md")} - {"index"}
    assert guides <= {p.name for p in site.iterdir()}
    assert {p.stem for p in API_PAGES} == {p.name for p in (site / "api").iterdir()}


@pytest.mark.slow
def test_the_api_reference_is_generated_from_the_docstrings(site):
    flow_page = _page(site, "api/flow")
    assert 'id="lazyflow.Flow.get"' in flow_page
    first_line = lazyflow.Flow.get.__doc__.splitlines()[0]
    assert first_line.split("``")[0].strip() in flow_page


@pytest.mark.slow
def test_sphinx_roles_in_docstrings_become_links_to_the_reference(site):
    # Flow.get's docstring says :class:`~lazyflow.UnknownInputError`
    assert ':class:`~lazyflow.UnknownInputError`' in lazyflow.Flow.get.__doc__
    flow_page = _page(site, "api/flow")
    assert re.search(r'href="\.\./errors/#lazyflow\.UnknownInputError"[^>]*>'
                     r'<code>UnknownInputError</code>', flow_page)
    for html in (site / "api").rglob("*.html"):
        assert ":class:`" not in html.read_text(encoding="utf-8"), html


@pytest.mark.slow
def test_doctest_examples_become_code_blocks_without_their_directives(site):
    caching_page = _page(site, "api/caching")
    # the Cache docstring's example, highlighted as a console session
    block = re.search(r'<pre><code class="language-pycon">.*?</code></pre>', caching_page, re.S)
    assert block is not None and "memory" in block[0]
    assert "doctest:" not in "".join(p.read_text(encoding="utf-8")
                                     for p in (site / "api").rglob("*.html"))


@pytest.mark.slow
def test_the_home_page_is_the_readme_with_its_guide_paths_linked(site):
    home = (site / "index.html").read_text(encoding="utf-8")
    assert 'id="quickstart"' in home  # README's "## Quickstart"
    assert '<a href="concepts/"><code>concepts.md</code></a>' in home


def test_every_public_name_has_an_entry_in_the_api_reference():
    entries = {m[1] for page in API_PAGES
               for m in re.finditer(r"^::: (\S+)", page.read_text(encoding="utf-8"), re.M)}
    # a name may be documented by its public path (lazyflow.Flow) or where it is defined
    # (lazyflow.history.history: `lazyflow.history` is also the package defining it)
    missing = [name for name in lazyflow.__all__
               if f"lazyflow.{name}" not in entries
               and f"{lazyflow._EXPORTS.get(name)}.{name}" not in entries]
    assert missing == []


# ------------------------------------------------------------- what strict mode refuses


def _small_site(folder: Path, pages: dict[str, str], nav: list[str] | None = None) -> Path:
    """A site of ``pages`` under mkdocs.yml's settings; returns its config file."""
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    config["docs_dir"] = str(folder / "docs")
    config["nav"] = list(pages) if nav is None else nav
    # the project's paths are relative to mkdocs.yml, which is not in this folder
    config["hooks"] = [str(ROOT / hook) for hook in config.get("hooks", [])]
    python = next(p["mkdocstrings"] for p in config["plugins"]
                  if isinstance(p, dict) and "mkdocstrings" in p)["handlers"]["python"]
    python["paths"] = [str(ROOT / path) for path in python.get("paths", ["."])]
    options = python["options"]
    options["extensions"] = [str(ROOT / extension) for extension in options["extensions"]]
    (folder / "docs").mkdir()
    for name, text in pages.items():
        (folder / "docs" / name).write_text(text, encoding="utf-8")
    path = folder / "mkdocs.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


GOOD = "# Good\n\n## A section\n\nSee [the other page](other.md#the-other-section).\n"
OTHER = "# Other\n\n## The other section\n\n[`Flow`][lazyflow.Flow] makes a flow.\n\n" \
        "::: lazyflow.Flow\n"


def test_a_small_site_with_the_same_settings_builds(tmp_path):
    # the control for the tests below: without a fault, it builds
    config = _small_site(tmp_path, {"good.md": GOOD, "other.md": OTHER})
    result = _build(config, tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_link_to_a_missing_page_fails_the_build(tmp_path):
    config = _small_site(tmp_path, {"good.md": GOOD + "[gone](missing.md)\n",
                                    "other.md": OTHER})
    result = _build(config, tmp_path / "site")
    assert result.returncode != 0
    assert "missing.md" in result.stderr


def test_a_link_to_a_missing_heading_fails_the_build(tmp_path):
    config = _small_site(tmp_path, {"good.md": GOOD + "[gone](other.md#no-such-section)\n",
                                    "other.md": OTHER})
    result = _build(config, tmp_path / "site")
    assert result.returncode != 0
    assert "no-such-section" in result.stderr


def test_a_page_left_out_of_the_nav_fails_the_build(tmp_path):
    config = _small_site(tmp_path, {"good.md": GOOD, "other.md": OTHER, "stray.md": "# Stray\n"},
                         nav=["good.md", "other.md"])
    result = _build(config, tmp_path / "site")
    assert result.returncode != 0
    assert "stray.md" in result.stderr


def test_a_reference_to_an_undocumented_name_fails_the_build(tmp_path):
    config = _small_site(tmp_path, {"good.md": GOOD + "[`Gone`][lazyflow.NoSuchName]\n",
                                    "other.md": OTHER})
    result = _build(config, tmp_path / "site")
    assert result.returncode != 0
    assert "lazyflow.NoSuchName" in result.stderr


def test_an_api_entry_for_a_name_lazyflow_lacks_fails_the_build(tmp_path):
    config = _small_site(tmp_path, {"good.md": GOOD + "::: lazyflow.NoSuchName\n",
                                    "other.md": OTHER})
    result = _build(config, tmp_path / "site")
    assert result.returncode != 0
    assert "lazyflow.NoSuchName" in result.stderr
