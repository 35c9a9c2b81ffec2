"""The widget in a real browser: JupyterLab, Debian's Chromium, Playwright.

Opens the widget tutorial in JupyterLab, runs its cells up to the first run,
and watches the SVG DAG of the live widget: every node is drawn, node states
change while the run goes on, and all end completed with their timings.
Screenshots go to the test's output dir (and to ``$LAZYFLOW_SCREENSHOT_DIR``
when set, which is how ``make screenshots`` refreshes the docs' pictures).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
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
def _run_all_in_jupyterlab(url: str, notebook: str):
    """A Chromium page with ``notebook`` open in JupyterLab, all its cells started."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: Debian's chromium could not be installed "
                    "(make browser-deps runs apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{url}/lab/tree/{notebook}")
            expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=60_000)
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name=re.compile("^Run All Cells")).click()
            yield page
        finally:
            browser.close()


def _save(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    page.locator(".lazyflow-widget").first.screenshot(path=str(path))
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
        cancel.click()
        status = page.locator(".lazyflow-widget .lf-status")
        expect(status).to_have_attribute("data-status", "cancelled", timeout=60_000)
        states = page.locator(WIDGET_NODE).evaluate_all(
            "els => els.map(e => e.dataset.state)")
        assert "cancelled" in states and "failed" not in states
        assert page.locator(f'{WIDGET_NODE}[data-node="report"]').get_attribute(
            "data-state") == "cancelled"
        expect(cancel).to_be_disabled()
        _save(page, tmp_path, "widget-cancelled.png")
