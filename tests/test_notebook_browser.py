"""The widget in a real browser: JupyterLab, Debian's Chromium, Playwright.

Opens the widget tutorial in JupyterLab, runs its cells up to the first run,
and watches the SVG DAG of the live widget: every node is drawn, node states
change while the run goes on, and all end completed with their timings.
Screenshots go to the test's output dir (and to ``$LAZYFLOW_SCREENSHOT_DIR``
when set, which is how ``make screenshots`` refreshes the docs' pictures).

Saved notebooks: a notebook executed and saved the way JupyterLab saves it
(no widget state), exported by ``jupyter nbconvert --to html`` and opened in
Chromium offline (every request that is not for a local file refused, so no
widget JavaScript from a CDN), shows the widget's DAG as the last run left it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
TUTORIAL = Path(__file__).parent.parent / "notebooks" / "04-widget.ipynb"
NODES = ["load", "clean", "features", "stats", "model", "report"]
WIDGET_NODE = ".lazyflow-widget svg g.lf-node"


def _tutorial_until(dest: Path, marker: str, extra: str | None = None) -> None:
    """The tutorial up to the cell containing ``marker`` (then ``extra``), outputs cleared."""
    nb = nbformat.read(TUTORIAL, as_version=4)
    end = next(i for i, c in enumerate(nb.cells) if marker in c.source)
    nb.cells = nb.cells[:end + 1]
    if extra is not None:
        nb.cells.append(nbformat.v4.new_code_cell(extra))
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    nbformat.write(nb, dest)


@contextlib.contextmanager
def _chromium_page():
    """A page of Debian's Chromium, headless."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: Debian's chromium could not be installed "
                    "(make browser-deps runs apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox"])
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 900})
        finally:
            browser.close()


@contextlib.contextmanager
def _run_all_in_jupyterlab(url: str, notebook: str):
    """A Chromium page with ``notebook`` open in JupyterLab, all its cells started."""
    from playwright.sync_api import expect

    with _chromium_page() as page:
        page.goto(f"{url}/lab/tree/{notebook}")
        expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=60_000)
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name=re.compile("^Run All Cells")).click()
        yield page


def _save(page, tmp_path: Path, name: str, selector: str = ".lazyflow-widget") -> None:
    path = tmp_path / name
    page.locator(selector).first.screenshot(path=str(path))
    target = os.environ.get("LAZYFLOW_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / name)


def test_the_widget_shows_every_node_and_its_states_live_in_jupyterlab(jupyterlab, tmp_path):
    from playwright.sync_api import expect

    url, root = jupyterlab
    _tutorial_until(root / "widget.ipynb", 'flow.run("report")')
    with _run_all_in_jupyterlab(url, "widget.ipynb") as page:
        # every node is drawn as soon as the widget shows
        nodes = page.locator(WIDGET_NODE)
        expect(nodes).to_have_count(len(NODES), timeout=60_000)
        assert sorted(nodes.evaluate_all("els => els.map(e => e.dataset.node)")) == sorted(NODES)

        # during the run: a node is running while the last one has not finished
        running = page.locator(f'{WIDGET_NODE}[data-state="running"]')
        expect(running.first).to_be_attached(timeout=60_000)
        expect(running.first.locator(".lf-caption")).to_have_text(
            re.compile(r"running \d+\.\ds"))  # its own timer
        page.locator(f'{WIDGET_NODE}[data-node="clean"][data-state="completed"]').wait_for(
            state="attached", timeout=60_000)
        report = page.locator(f'{WIDGET_NODE}[data-node="report"]')
        assert report.get_attribute("data-state") in ("pending", "running")
        _save(page, tmp_path, "widget-mid-run.png")

        # after the run: every node completed, each labelled with its time
        done = page.locator(f'{WIDGET_NODE}[data-state="completed"]')
        expect(done).to_have_count(len(NODES), timeout=60_000)
        captions = page.locator(f"{WIDGET_NODE} .lf-caption").all_text_contents()
        assert all(re.fullmatch(r"\d+µs|\d+\.\dms|\d+\.\d\ds", c) for c in captions), captions
        expect(page.locator(".lazyflow-widget .lf-status")).to_contain_text("6 done")
        _save(page, tmp_path, "widget-after-run.png")


def test_the_cancel_button_stops_a_submitted_run_in_jupyterlab(jupyterlab, tmp_path):
    from playwright.sync_api import expect

    url, root = jupyterlab
    _tutorial_until(root / "cancel.ipynb", "w = flow.widget()", 'job = w.submit("report")')
    with _run_all_in_jupyterlab(url, "cancel.ipynb") as page:
        page.locator(f'{WIDGET_NODE}[data-state="running"]').first.wait_for(
            state="attached", timeout=60_000)
        cancel = page.locator(".lazyflow-widget button", has_text="Cancel")
        expect(cancel).to_be_enabled()
        expect(cancel).to_have_class(re.compile(r"\bmod-danger\b"))  # red while it can act
        cancel.click()
        status = page.locator(".lazyflow-widget .lf-status")
        expect(status).to_have_attribute("data-status", "cancelled", timeout=60_000)
        states = page.locator(WIDGET_NODE).evaluate_all(
            "els => els.map(e => e.dataset.state)")
        assert "cancelled" in states and "failed" not in states
        assert page.locator(f'{WIDGET_NODE}[data-node="report"]').get_attribute(
            "data-state") == "cancelled"
        expect(cancel).to_be_disabled()
        expect(cancel).not_to_have_class(re.compile(r"\bmod-danger\b"))  # grey: nothing runs
        _save(page, tmp_path, "widget-cancelled.png")


# --------------------------------------------------------------------------- saved notebooks

STATIC_NODE = ".lazyflow-static svg g.lf-node"


def _nbconvert(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "nbconvert", *args], check=True,
                   capture_output=True, timeout=300)


@contextlib.contextmanager
def _offline(html: Path):
    """``html`` open in Chromium, every request that is not for a local file refused."""
    with _chromium_page() as page:
        page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file:")
                   else r.abort())
        page.goto(html.as_uri(), wait_until="load")
        yield page


def test_a_saved_notebooks_html_export_shows_the_widgets_last_run_offline(tmp_path):
    from playwright.sync_api import expect

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in (
        "import lazyflow as lf\n"
        "flow = lf.Flow('kept', cache=lf.Cache(disk=None))\n"
        "flow.node(name='load')(lambda rows=3: list(range(rows)))\n"
        "flow.node(name='clean')(lambda load: [x for x in load if x])\n"
        "flow.node(name='report')(lambda clean: len(clean))",
        "w = flow.widget()\nw",
        "flow.run('report').status",
    )])
    nbformat.write(nb, tmp_path / "kept.ipynb")
    # executed and saved as JupyterLab saves a notebook: without the widgets' state
    _nbconvert("--to", "notebook", "--execute", "--inplace",
               "--ExecutePreprocessor.store_widget_state=False", str(tmp_path / "kept.ipynb"))
    _nbconvert("--to", "html", str(tmp_path / "kept.ipynb"))
    with _offline(tmp_path / "kept.html") as page:
        nodes = page.locator(STATIC_NODE)
        expect(nodes).to_have_count(3)
        for node in nodes.all():
            expect(node).to_be_visible()
        assert nodes.evaluate_all("els => els.map(e => [e.dataset.node, e.dataset.state])") \
            == [["load", "completed"], ["clean", "completed"], ["report", "completed"]]
        expect(page.locator(".lazyflow-static .lf-status")).to_contain_text("3 done")


def test_the_widget_tutorials_html_export_shows_its_dag_offline(tmp_path):
    from playwright.sync_api import expect

    shutil.copy(TUTORIAL, tmp_path / "tutorial.ipynb")
    _nbconvert("--to", "html", str(tmp_path / "tutorial.ipynb"))
    with _offline(tmp_path / "tutorial.html") as page:
        first = page.locator(".lazyflow-static").first
        expect(first.locator("svg g.lf-node")).to_have_count(len(NODES) + 1)  # and 'upload'
        names = first.locator("svg g.lf-node").evaluate_all("els => els.map(e => e.dataset.node)")
        assert sorted(names) == sorted([*NODES, "upload"])
        expect(first.locator("svg g.lf-node").first).to_be_visible()
        _save(page, tmp_path, "saved-notebook.png", ".lazyflow-static")
