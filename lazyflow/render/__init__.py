"""Pure rendering of flows and runs: layout, SVG and HTML, with no IPython in sight.

Design note
-----------
``layout.py`` places a DAG's nodes in layers (Sugiyama style, sub-flows as
group boxes); ``svg.py`` draws it with per-node status colours, timings and
cache tiers; ``model.py`` turns a run's events into the per-node view state
the widget and the static renderings share; ``display.py`` renders flows,
runs and explanations as HTML for ``_repr_html_``. The notebook package
(``lazyflow.notebook``) is the only place that imports IPython and
ipywidgets; everything here is strings in, strings out, so the CLI and
saved notebooks can use it too.
"""
