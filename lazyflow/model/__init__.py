"""The model layer: nodes, their options and the graph wiring — it never runs anything.

Design note
-----------
``graph.py`` holds :class:`Node` (a function with its options, wired by
parameter names) and :class:`Plan` (the nodes a request needs, in
dependency order, with their inputs); ``signature.py`` reads a node
function's parameters, and ``requests.py`` checks a request's keywords
against its plan (unknown inputs, keywords naming nodes, near-miss
parameter names); ``options.py`` the typed, frozen
``NodeOptions`` with every default and check in one place, and
``policies.py`` / ``resources.py`` / ``outputs.py`` / ``skip.py`` what
those options mean at run time. ``lazy.py`` and ``mapping.py`` declare lazy
inputs and ``map=`` (their scheduling is the engine's features), and
``files.py`` the output files a value names. Everything here is plain data
and pure functions: the engine (``lazyflow.engine``) runs a plan, the
façade (``lazyflow.api``) builds one.
"""
