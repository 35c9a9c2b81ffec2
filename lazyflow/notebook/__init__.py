"""The notebook layer: live DAG widget, static reprs, ``%%flow`` magics, progress.

Sits on top of everything and is imported only when used, so ``import
lazyflow`` needs neither IPython nor ipywidgets. ``layout``/``svg``/``display``
need no third-party package; ``widget`` needs ipywidgets; ``magics`` IPython.
"""
