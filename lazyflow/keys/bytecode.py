"""The static part of a code fingerprint: what a code object *is*, and where it reads by name.

Design note
-----------
Computed once per code object and memoised: a digest of the bytecode,
constants (nested code objects included), names and argument layout — not
line numbers or file names, so moving a function or re-running its notebook
cell in another position changes nothing (joblib's recurring bug was keying
on ``<ipython-input-N>``) — plus the names the code reads (``co_names``: globals
and attributes, which say what the code reads of a module), the names it
loads *as globals* (read from the bytecode: an attribute named like a global,
``df.mean`` beside a global ``mean``, reads no global), and its *dynamic lookups*: reads by a computed name (``globals()``, ``eval``,
``getattr(module, name)``, ``sys.modules[name]``...) that no static walk can
follow. The same detector serves node code (``fingerprint.py``) and ``%%flow``
cells. Beside them it lists the modules the code imports in its body
(``module:<level>:<name>``, also ``import_module("name")`` and
``sys.modules["name"]``): the module named may not be loaded yet when the
fingerprint is taken, so its name never enters ``co_names`` as a global.
"""

from __future__ import annotations

import dis
import re
import sys
import types

import xxhash

from lazyflow.keys.hashing import hash_value
from lazyflow.keys.weakmemo import WeakMemo

__all__ = ["DYNAMIC_BUILTINS", "CodeInfo", "code_info"]

DYNAMIC_BUILTINS = frozenset({"eval", "exec", "globals", "vars", "__import__"})
"""Builtins through which code reads names no static analysis sees (also used by ``%%flow``)."""


# (digest, names read (globals and attributes), names loaded as globals, dynamic lookups,
# string constants that look like file paths): plain tuples of strings, untracked by the GC
CodeInfo = tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]


_CODE_INFO = WeakMemo()  # code object -> CodeInfo


def code_info(code: types.CodeType, *, memo: bool) -> CodeInfo:
    """Digest, names read, global names and dynamic lookups of ``code``; memoised for
    helpers.

    A node's own code is walked once per fingerprint, and fingerprints are
    memoised: remembering it twice would only add objects for the GC to walk.
    """
    info: CodeInfo | None = _CODE_INFO.get(code)
    if info is None:
        parts: list[bytes] = []
        names: list[str] = []
        global_names: list[str] = []
        dynamic: list[str] = []
        paths: list[str] = []
        _walk_code(code, parts, names, global_names, dynamic, paths)
        # one call over the joined parts: xxh3 gives what feeding them one by one gives
        info = (xxhash.xxh3_128_hexdigest(b"".join(parts)),
                tuple(dict.fromkeys(names)) if names else (),
                tuple(dict.fromkeys(global_names)) if global_names else (),
                tuple(dict.fromkeys(dynamic)) if dynamic else (),
                tuple(dict.fromkeys(paths)) if paths else ())
        if memo:
            _CODE_INFO.set(code, info)
    return info


def _walk_code(code: types.CodeType, parts: list[bytes], names: list[str],
               global_names: list[str], dynamic: list[str], paths: list[str]) -> None:
    """Feed everything that defines behaviour, nothing that only locates the code.

    The globals a code object reads are the names of its global loads and stores
    (:func:`_global_names`, a scan of bytes; a disassembly costs ~30 µs per
    function): ``co_names`` also lists attribute names, and taking those for
    globals keyed ``x.mean()`` by the notebook's unrelated global ``mean``, a
    global the code never reads and that a worker process, given the function by
    value, does not even have. Code is disassembled only when it names a builtin
    that can read names dynamically. Text is gathered and encoded once per code
    object (UTF-8 of a concatenation is the concatenation of UTF-8s).
    """
    parts.append(code.co_code)
    nul, soh = "\0", "\1"  # identifiers contain neither: the layout is unambiguous
    text = [f"{code.co_argcount},{code.co_posonlyargcount},{code.co_kwonlyargcount},"
            f"{code.co_flags}{soh}{nul.join(code.co_names)}{soh}{nul.join(code.co_varnames)}"
            f"{soh}{nul.join(code.co_freevars)}{soh}{nul.join(code.co_cellvars)}"]
    names.extend(code.co_names)
    global_names.extend(_global_names(code))
    candidates = False
    if not _SUSPECT.isdisjoint(code.co_names):
        dynamic.extend(_dynamic_lookups(code))
    if _IMPORT_NAME in code.co_code[::2]:  # one opcode byte per 2-byte unit (3.11+)
        dynamic.extend(_imports(code))
    for const in code.co_consts:
        if type(const) in _SIMPLE_CONSTS:
            text.append(f"{type(const).__name__}:{const!r}|")
            if type(const) is str and _path_like(const):
                candidates = True
        elif isinstance(const, types.CodeType):
            text.append("<code>")
            parts.append("".join(text).encode())
            text = []
            _walk_code(const, parts, names, global_names, dynamic, paths)
        else:
            text.append(hash_value(const))
    parts.append("".join(text).encode())
    if candidates:  # disassembled only then: which of them the code reads as a file
        paths.extend(_read_paths(code))


_EXTENSION = re.compile(r"\.[A-Za-z0-9_]{1,10}\Z")


def _path_like(text: str) -> bool:
    """Whether a string constant may be a file's path: one line, with a separator or an
    extension (``data/raw.csv``); ``fingerprint.py`` looks for it on disk (a constant
    path keys its text, never the file's content)."""
    return len(text) < 1024 and "\n" not in text \
        and ("/" in text or _EXTENSION.search(text) is not None)


# what reads a file named by its first argument (``open`` unless its mode writes), or, after
# ``Path(...)``, the method that reads it
_READERS = frozenset({"open", "load", "loadtxt", "genfromtxt", "fromfile", "imread",
                      "read_text", "read_bytes", "read_csv", "read_table", "read_parquet",
                      "read_excel", "read_json", "read_feather", "read_pickle", "read_hdf",
                      "read_fwf", "read_orc", "read_sas", "read_spss", "read_stata", "read_xml",
                      "read_ipc", "read_ndjson", "scan_csv", "scan_parquet", "open_dataset",
                      "open_dataarray", "loadmat", "read_file"})
_PATHS = frozenset({"Path", "PurePath", "PosixPath"})
_NAMING = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_ATTR", "LOAD_METHOD", "LOAD_DEREF",
                     "LOAD_FAST"})
_NOISE = frozenset({"CACHE", "PUSH_NULL", "PRECALL", "KW_NAMES", "RESUME"})


def _read_paths(code: types.CodeType) -> list[str]:
    """The path-like string constants ``code``'s own body passes first to a reader
    (:data:`_READERS`: ``pd.read_csv("data.csv")``, ``open("data.csv")`` unless its mode
    writes, ``Path("data.csv").read_text()``); what it writes (``savefig("fig.png")``,
    ``open("log.txt", "a")``) is no input and is not listed."""
    ops = [x for x in dis.get_instructions(code) if x.opname not in _NOISE]
    found = []
    for i, ins in enumerate(ops):
        if ins.opname != "LOAD_CONST" or type(ins.argval) is not str \
                or not _path_like(ins.argval) or i == 0:
            continue
        before, after = ops[i - 1], ops[i + 1:i + 3]
        if before.opname not in _NAMING or not _whole_argument(ops, i):
            continue
        if before.argval == "open":
            mode = after[0].argval if after and after[0].opname == "LOAD_CONST" else "r"
            reads = isinstance(mode, str) and not set(mode) & set("wax+")
        else:
            reads = before.argval in _READERS or (
                before.argval in _PATHS and len(after) == 2 and after[0].opname == "CALL"
                and after[1].opname in ("LOAD_METHOD", "LOAD_ATTR")
                and after[1].argval in _READERS)
        if reads:
            found.append(ins.argval)
    return found


def _whole_argument(ops: list[dis.Instruction], at: int) -> bool:
    """Whether the constant at ``at`` is a whole argument of the call after it, not the
    first piece of a path built at run time (``f"/proc/{pid}/stat"``, ``"data/" + name``),
    which names no file of its own."""
    for ins in ops[at + 1:at + 16]:
        if ins.opname in _COMPOSING:
            return False
        if ins.opname == "CALL":
            return True
    return False


# opcodes that build a string or path from pieces (f-strings, ``+``, ``/``, ``%``)
_COMPOSING = frozenset({"FORMAT_VALUE", "BUILD_STRING", "BINARY_OP", "BINARY_ADD",
                        "BINARY_TRUE_DIVIDE", "BINARY_MODULO", "BINARY_SUBSCR"})
_SIMPLE_CONSTS = frozenset({int, float, str, bool, type(None), bytes, complex, type(...)})
_SUSPECT = DYNAMIC_BUILTINS | {"getattr", "import_module", "modules"}
_LOADS = frozenset({"LOAD_GLOBAL", "LOAD_NAME"})
_IMPORT_NAME = bytes([dis.opmap["IMPORT_NAME"]])
# the opcodes that name a global (``LOAD_NAME``: a class body's read, globals after its own)
_GLOBAL_OPS = tuple(bytes([dis.opmap[op]]) for op in
                    ("LOAD_GLOBAL", "LOAD_NAME", "STORE_GLOBAL", "DELETE_GLOBAL"))
_LOAD_GLOBAL = dis.opmap["LOAD_GLOBAL"]
# from 3.11 LOAD_GLOBAL's argument is the name's index shifted left, its low bit a flag
_LOAD_GLOBAL_SHIFT = 1 if sys.version_info >= (3, 11) else 0
_EXTENDED_ARG = dis.opmap["EXTENDED_ARG"]
_LOAD_CONST = dis.opmap["LOAD_CONST"]


def _global_names(code: types.CodeType) -> list[str]:
    """The names ``code``'s own body loads, stores or deletes as globals, from the raw
    bytecode: each global opcode's unit and its ``EXTENDED_ARG`` prefixes."""
    raw = code.co_code
    ops = raw[::2]
    found = []
    for op in _GLOBAL_OPS:
        at = ops.find(op)
        while at != -1:
            arg = _oparg(raw, ops, at)
            if op[0] == _LOAD_GLOBAL:
                arg >>= _LOAD_GLOBAL_SHIFT
            if arg < len(code.co_names):
                found.append(code.co_names[arg])
            at = ops.find(op, at + 1)
    return found


def _oparg(raw: bytes, ops: bytes, at: int) -> int:
    """The argument of the instruction at unit ``at`` of ``raw`` (``ops``: its opcodes),
    its ``EXTENDED_ARG`` prefixes included."""
    arg, back, shift = raw[2 * at + 1], at - 1, 8
    while back >= 0 and ops[back] == _EXTENDED_ARG:
        arg |= raw[2 * back + 1] << shift
        back, shift = back - 1, shift + 8
    return arg


def _imports(code: types.CodeType) -> list[str]:
    """``module:<level>:<name>`` for each ``import`` statement in ``code``'s own body.

    Read from the raw bytecode (an ``IMPORT_NAME`` unit, its ``EXTENDED_ARG``
    prefixes, and the ``LOAD_CONST`` of the level two units before), a scan of
    bytes rather than a disassembly, which costs ~30 µs.
    """
    raw = code.co_code
    ops = raw[::2]
    found = []
    at = ops.find(_IMPORT_NAME)
    while at != -1:
        arg = _oparg(raw, ops, at)
        level = 0
        if at >= 2 and ops[at - 2] == _LOAD_CONST:  # LOAD_CONST level; LOAD_CONST fromlist
            const = code.co_consts[raw[2 * (at - 2) + 1]]
            level = const if type(const) is int else 0
        if arg < len(code.co_names):
            found.append(f"module:{level}:{code.co_names[arg]}")
        at = ops.find(_IMPORT_NAME, at + 1)
    return found



def _dynamic_lookups(code: types.CodeType) -> list[str]:
    """Reads by computed name, as ``kind:target``: ``call:globals`` (``globals()``,
    ``eval``...), ``getattr:<module>`` (``getattr(m, <expr>)`` on a global or an
    imported module), ``import:`` (``import_module(<expr>)``) and ``modules:sys``
    (``sys.modules[<expr>]``); the dynamic part decides which of them it cannot
    see into (a user module's attributes). Modules read by a constant name
    (``import_module("m")``, ``sys.modules["m"]``) are listed as imports."""
    found: list[str] = []
    instructions = [x for x in dis.get_instructions(code)
                    if x.opname not in ("PUSH_NULL", "CACHE", "PRECALL")]
    imported: dict[str, str] = {}  # local name -> module it was imported as
    for i, ins in enumerate(instructions):
        name = ins.argval
        if ins.opname == "IMPORT_NAME" and i + 1 < len(instructions) \
                and instructions[i + 1].opname == "STORE_FAST":
            imported[instructions[i + 1].argval] = name
        elif ins.opname in _LOADS and name in DYNAMIC_BUILTINS:
            found.append(f"call:{name}")
        elif name == "getattr" and ins.opname in _LOADS:
            target, key = instructions[i + 1:i + 2], instructions[i + 2:i + 3]
            if target and key and key[0].opname != "LOAD_CONST":
                if target[0].opname in _LOADS:
                    found.append(f"getattr:{target[0].argval}")
                elif target[0].opname == "LOAD_FAST" and target[0].argval in imported:
                    found.append(f"getattr:{imported[target[0].argval]}")
        elif name == "import_module" and ins.opname in _LOADS | {"LOAD_ATTR", "LOAD_METHOD"}:
            key = instructions[i + 1:i + 2]
            if not key or key[0].opname != "LOAD_CONST":
                found.append("import:")
            elif isinstance(key[0].argval, str):
                found.append(f"module:0:{key[0].argval}")
        elif name == "modules" and ins.opname in ("LOAD_ATTR", "LOAD_METHOD") and i \
                and _names_sys(instructions[i - 1], imported):
            lookup = _modules_lookup(instructions[i + 1:i + 4])
            if lookup:
                found.append(lookup)
    return found


def _names_sys(ins: dis.Instruction, imported: dict[str, str]) -> bool:
    """Whether ``ins`` loads the ``sys`` module (a global or a module imported in the body)."""
    return (ins.opname in _LOADS and ins.argval == "sys") or \
        (ins.opname == "LOAD_FAST" and imported.get(ins.argval) == "sys")


def _modules_lookup(after: list[dis.Instruction]) -> str | None:
    """What ``sys.modules`` followed by ``after`` reads: a module by a constant name
    (``sys.modules["m"]``, ``.get("m")``: a module like an import), nothing
    (``"m" in sys.modules``), or any module by a computed name."""
    ops = [x.opname for x in after]
    if ops[:1] == ["CONTAINS_OP"]:
        return None
    if ops[:2] == ["LOAD_CONST", "BINARY_SUBSCR"]:
        const = after[0].argval
    elif ops[:3] in (["LOAD_METHOD", "LOAD_CONST", "CALL"], ["LOAD_ATTR", "LOAD_CONST", "CALL"]) \
            and after[0].argval == "get":
        const = after[1].argval
    else:
        return "modules:sys"
    return f"module:0:{const}" if isinstance(const, str) else "modules:sys"
