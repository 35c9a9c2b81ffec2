"""The notebook layer: live DAG widget, static reprs, ``%%flow`` magics, progress.

Design note
-----------
State flows one way: engine events -> a view model (``lazyflow.render.model``)
-> views (the widget here, the SVG and HTML reprs in ``lazyflow.render``); a
view drives the engine only through public calls (cancel). Rendering is pure
and lives in ``lazyflow.render``, so saved notebooks and the CLI draw the same
DAG without a kernel.

This package is the only place IPython and ipywidgets are imported: the
widget (``widget.py``, with ``throttle.py``), the magics and ``%%flow`` cells
(``magics.py``, ``cells.py``), replaying a cell's outputs (``replay.py``) and
progress bars (``progress.py``). It is imported only when used, so ``import
lazyflow`` needs neither IPython nor ipywidgets.
"""
