"""The notebook layer: live DAG widget, static reprs, ``%%flow`` magics, progress.

Design note
-----------
State flows one way: engine events -> a model (``model.py``) -> views (the
widget, the SVG and HTML reprs); a view drives the engine only through public
calls (cancel). Layout and SVG (``layout.py``, ``svg.py``) are pure functions of
the graph, so saved notebooks and the CLI render the same DAG without a kernel.

Sits on top of everything and is imported only when used, so ``import
lazyflow`` needs neither IPython nor ipywidgets. ``layout``/``svg``/``display``
need no third-party package; ``widget`` needs ipywidgets; ``magics`` IPython.
"""
