# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench lint docs browser-deps screenshots clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# The demo needs lazyflow and numpy only: seconds to install, not the test extra's minutes.
DEMO_STAMP := $(VENV)/.installed-demo
$(DEMO_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e . numpy
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(PY) examples/demo.py

test: $(STAMP) browser-deps
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not browser and not cluster" tests

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/hashing.py
	$(PY) benchmarks/globals.py
	$(PY) benchmarks/widget_overhead.py
	$(PY) benchmarks/layout.py
	$(PY) benchmarks/parallel.py
	$(PY) benchmarks/tiers.py
	$(PY) benchmarks/control.py
	$(PY) benchmarks/history.py

lint: $(STAMP)
	$(VENV)/bin/ruff check lazyflow tests

# The documentation site, docs/ plus the API reference from the docstrings, into site/;
# strict: a broken link or an unresolved reference fails the build.
docs: $(STAMP)
	$(PY) -m mkdocs build --strict

# The browser test drives Debian's Chromium; install it once if missing (we are root in CI).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) \
	  || echo "could not install chromium: browser tests will say why they skip"; }

# Refresh the widget screenshots of docs/notebooks.md from the real-browser test.
screenshots: $(STAMP) browser-deps
	LAZYFLOW_SCREENSHOT_DIR=docs/img $(PY) -m pytest -q -m browser tests/test_notebook_browser.py

clean:
	rm -rf $(VENV) .lazyflow .pytest_cache site
