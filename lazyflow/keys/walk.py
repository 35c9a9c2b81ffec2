"""What a code fingerprint's walk (``fingerprint.py``) keeps as it goes: its named components,
the checks that re-read what it read (``rechecks.py``), and its notes; and how a value it
reads enters it.

A value enters by its digest, under a label naming where it was read; a value that can
change in place is re-hashed on every request, and one that cannot be hashed makes the
function *volatile* (never served from a cache), with a note saying why.
"""

from __future__ import annotations

from typing import Any

from lazyflow.errors import HashingError, NotServable
from lazyflow.keys.hashing import hash_read_value, hash_value
from lazyflow.keys.rechecks import Check

__all__ = ["Source", "Walk", "add_value", "digest_or_note", "is_immutable"]


class Walk:
    """One fingerprint computation: components by unique label, checks, notes."""

    __slots__ = ("checks", "components", "home", "home_name", "labels", "notes", "quiet",
                 "seen", "volatile")

    def __init__(self, home: Any) -> None:
        self.components: dict[str, str] = {}
        self.checks: list[Check] = []
        self.notes: list[str] = []
        self.quiet: list[str] = []  # notes no warning repeats (a value NotServable)
        self.seen: set[Any] = set()  # ids of objects, (id of a module's dict, attribute)
        self.labels: dict[str, Any] = {}  # label -> what it stands for (to share or number it)
        self.home = home  # the root's global namespace: its globals keep short labels
        self.home_name = home.get("__name__", "?") if isinstance(home, dict) else None
        self.volatile = False

    def add(self, label: str, digest: str, source: Any = None) -> None:
        """Add a component; a label taken by another part is numbered, never overwritten.

        A part under a taken label with the same digest adds nothing: the same part reached
        twice, or the same content read through two holders (a worker given a function by
        value reads its module's globals from a copy and from the module itself, where the
        process that keyed it read one namespace: ``codecheck.py``)."""
        key = label
        n = 1
        while key in self.components:
            if (source is not None and self.labels.get(key) == source) \
                    or self.components[key] == digest:
                return  # the same part, reached twice
            n += 1
            key = f"{label}#{n}"
        self.components[key] = digest
        self.labels[key] = source

    def first_visit(self, obj: Any) -> bool:
        """True the first time ``obj`` is met in this walk (recursion and sharing are cut)."""
        if id(obj) in self.seen:
            return False
        self.seen.add(id(obj))
        return True

    def unseeable(self, note: str, *, quiet: bool = False) -> None:
        """Something the walk cannot see into: the function becomes volatile (``quiet``:
        and nothing is wrong, so no warning repeats the note)."""
        self.volatile = True
        if note not in self.notes:
            self.notes.append(note)
            if quiet:
                self.quiet.append(note)


_IMMUTABLE = (int, float, complex, str, bytes, bool, type(None), range)


def is_immutable(value: Any) -> bool:
    """Whether ``value`` can never change in place (and holds no code that could). Exact
    types only: a subclass of ``str`` or ``int`` may carry attributes that change."""
    if type(value) in _IMMUTABLE:
        return True
    return type(value) in (tuple, frozenset) and all(type(v) in _IMMUTABLE for v in value)


def add_value(walk: Walk, label: str, value: Any, how: int, holder: Any, name: Any, *,
               strict: bool = True) -> None:
    """Add the value digest of ``value``; one that cannot be hashed makes the walk volatile."""
    digest = digest_or_note(walk, label, value, strict=strict)
    if digest is None:
        return
    walk.add(label, digest, Source(holder, name))
    # a value that can change in place is re-hashed on every request
    walk.checks.append((how, holder, name, value, None if is_immutable(value) else digest))


def digest_or_note(walk: Walk, label: str, value: Any, *, strict: bool = True
                    ) -> str | None:
    """The digest of ``value``, or ``None`` when it cannot be hashed (the walk turns volatile).

    ``strict``, for what user code reads: by :func:`hash_read_value`, to which a queue or
    weak container (whose items change without the name being rebound) cannot be keyed, so
    the node is not cached. Otherwise by :func:`hash_value`, which keys them by type: for
    the fingerprinted function's own defaults, which are its inputs' values (a node's
    engine passes them, hashed as inputs: a queue there is a control channel), and for what
    an installed function's closure holds, the package's own state
    (``functools.singledispatch`` keeps its dispatch cache, derived from the registry hashed
    beside it, in a ``WeakKeyDictionary``).
    """
    try:
        return hash_read_value(value) if strict else hash_value(value)
    except NotServable as e:
        walk.add(label, "<not servable>")
        walk.unseeable(e.reason, quiet=True)
        return None
    except HashingError as e:
        walk.add(label, f"<unhashable {e.type_name}>")
        walk.unseeable(f"{label} holds a {e.type_name} that cannot be hashed ({e.reason}); "
                       "register a hasher with lf.register_hasher")
        return None


class Source(tuple):  # type: ignore[type-arg]
    """Where a value was read (holder identity, name): the same read reached twice is one part."""

    def __new__(cls, holder: Any, name: Any) -> Source:
        return super().__new__(cls, (id(holder), name))
