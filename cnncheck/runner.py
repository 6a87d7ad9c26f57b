"""The boundary between cnncheck and the code it checks.

Code under test (a student's ``layers.py``, a plugin, cnncheck's own layers)
is only ever called through a :class:`Server`: it loads a module, calls its
functions on the arguments the caller describes, keeps what they return
under numbered handles, and describes every returned value as *facts* (the
array it holds, its type, whether it was converted) without judging it.
Whatever the code raises, returns or prints becomes facts; nothing it does
can raise inside the caller.  Verdicts -- statuses, messages, numerical
derivatives -- are made by the caller from those facts
(:mod:`cnncheck.boundary`, :mod:`cnncheck.engine`).

A :class:`Server` runs in one of two places:

* in cnncheck's own process (:class:`cnncheck.session.LocalSession`), for
  cnncheck's built-in layers and ``--no-isolate``;
* in a child process started as ``python runner.py REQUEST_FD RESPONSE_FD``
  (:class:`cnncheck.session.ChildSession`), for user modules and ``grade``.
  The child never imports cnncheck: this file needs only the standard
  library and numpy, and once the child is set up an audit hook (which
  cannot be removed) refuses every import of cnncheck or of a module the
  caller forbids, every read of cnncheck's files or of paths the caller
  protects, and every new process.  Requests and responses travel as
  frames of the fixed binary format below, which carries values, never
  code and never statuses.

Wire format: a frame is ``b"CNKR"``, a little-endian ``uint32`` sequence
number, a ``uint64`` payload length and the payload, one encoded value.
Values are tagged: ``N`` None, ``T``/``F`` booleans, ``i`` int64, ``I`` a
big integer as decimal text, ``f`` float64, ``s`` UTF-8 text (``uint32``
length), ``b`` bytes (``uint64`` length), ``l`` list (``uint32`` count),
``d`` dict (``uint32`` count, text keys), ``a`` array (``uint8`` dtype code
from :data:`WIRE_DTYPES`, ``uint8`` ndim, ``uint64`` per dimension, then the
C-ordered little-endian data).  :func:`decode` checks every length against
the bytes present, and the nesting depth.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import importlib.util
import os
import struct
import sys
import threading
import time
import traceback
import types
import zlib

import numpy as np

# Bound once, so code under test that replaces attributes of numpy or the
# standard library cannot change how the runner itself behaves.
_asarray = np.asarray
_array = np.array
_ndarray = np.ndarray
_perf_counter = time.perf_counter
_os_write = os.write
_os_read = os.read
_pack = struct.pack
_unpack_from = struct.unpack_from
_isinstance = builtins.isinstance
_MaskedArray = np.ma.MaskedArray
_np_seed = np.random.seed

# -- wire format ---------------------------------------------------------------------------
MAGIC = b"CNKR"
_HEADER = struct.Struct("<4sIQ")

#: Array dtypes that can cross the wire, by code (the code is the list index).
WIRE_DTYPES = ("<f8", "<f4", "<f2", "<i8", "<i4", "<i2", "|i1", "<u8", "<u4", "<u2", "|u1", "|b1",
               "<c16", "<c8")
_DTYPE_CODE = {np.dtype(d): i for i, d in enumerate(WIRE_DTYPES)}

#: Nesting depth a decoded value may have.
MAX_DEPTH = 48

#: Largest payload accepted in one frame (bytes).
MAX_FRAME = 1 << 34


class WireError(Exception):
    """A frame or value that does not follow the wire format."""


def _wire_dtype(dtype) -> np.dtype | None:
    """The little-endian dtype an array of ``dtype`` travels as, or None when it cannot travel."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "fiubc" or dtype.names is not None or dtype.subdtype is not None:
        return None
    wire = dtype.newbyteorder("<") if dtype.byteorder not in ("|", "<", "=") else dtype
    wire = np.dtype(wire.str.replace("=", "<"))
    return wire if wire in _DTYPE_CODE else None


def encode(value) -> bytes:
    """Encode ``value`` (None, bool, int, float, str, bytes, list, tuple, dict, ndarray) as bytes."""
    parts: list = []
    _encode(value, parts, 0)
    return b"".join(parts)


def _encode(value, parts: list, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise WireError("value nested too deeply to encode")
    if value is None:
        parts.append(b"N")
    elif value is True:
        parts.append(b"T")
    elif value is False:
        parts.append(b"F")
    elif _isinstance(value, (int, np.integer)):
        value = int(value)
        if -(1 << 63) <= value < (1 << 63):
            parts.append(b"i" + _pack("<q", value))
        else:
            text = str(value).encode()
            parts.append(b"I" + _pack("<I", len(text)) + text)
    elif _isinstance(value, (float, np.floating)):
        parts.append(b"f" + _pack("<d", float(value)))
    elif _isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        parts.append(b"s" + _pack("<I", len(data)) + data)
    elif _isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        parts.append(b"b" + _pack("<Q", len(data)) + data)
    elif _isinstance(value, (list, tuple)):
        parts.append(b"l" + _pack("<I", len(value)))
        for item in value:
            _encode(item, parts, depth + 1)
    elif _isinstance(value, dict):
        parts.append(b"d" + _pack("<I", len(value)))
        for key, item in value.items():
            _encode(str(key), parts, depth + 1)
            _encode(item, parts, depth + 1)
    elif _isinstance(value, _ndarray):
        wire = _wire_dtype(value.dtype)
        if wire is None:
            raise WireError(f"arrays of dtype {value.dtype} cannot be encoded")
        data = _asarray(value, dtype=wire, order="C")     # keeps 0-d arrays 0-d
        if data.ndim > 255:
            raise WireError("array has too many dimensions to encode")
        parts.append(b"a" + _pack("<BB", _DTYPE_CODE[wire], data.ndim)
                     + _pack(f"<{data.ndim}Q", *data.shape) + data.tobytes())
    else:
        raise WireError(f"cannot encode a {type(value).__name__}")


def decode(data: bytes):
    """Decode one value from ``data``; raise :class:`WireError` on anything malformed."""
    view = memoryview(data)
    value, end = _decode(view, 0, 0)
    if end != len(view):
        raise WireError(f"{len(view) - end} bytes left over after the value")
    return value


def _need(view: memoryview, at: int, n: int) -> None:
    if n < 0 or at + n > len(view):
        raise WireError("value runs past the end of the frame")


def _decode(view: memoryview, at: int, depth: int):
    if depth > MAX_DEPTH:
        raise WireError("value nested too deeply")
    _need(view, at, 1)
    tag = bytes(view[at:at + 1])
    at += 1
    if tag == b"N":
        return None, at
    if tag == b"T":
        return True, at
    if tag == b"F":
        return False, at
    if tag == b"i":
        _need(view, at, 8)
        return _unpack_from("<q", view, at)[0], at + 8
    if tag == b"f":
        _need(view, at, 8)
        return _unpack_from("<d", view, at)[0], at + 8
    if tag in (b"s", b"I"):
        _need(view, at, 4)
        (n,) = _unpack_from("<I", view, at)
        at += 4
        _need(view, at, n)
        raw = bytes(view[at:at + n])
        try:
            text = raw.decode("utf-8", "surrogatepass")
            value = text if tag == b"s" else int(text)
        except ValueError:
            raise WireError("malformed text or integer") from None
        return value, at + n
    if tag == b"b":
        _need(view, at, 8)
        (n,) = _unpack_from("<Q", view, at)
        at += 8
        _need(view, at, n)
        return bytes(view[at:at + n]), at + n
    if tag == b"l":
        _need(view, at, 4)
        (n,) = _unpack_from("<I", view, at)
        at += 4
        if n > len(view) - at:
            raise WireError("list longer than the frame")
        items = []
        for _ in range(n):
            item, at = _decode(view, at, depth + 1)
            items.append(item)
        return items, at
    if tag == b"d":
        _need(view, at, 4)
        (n,) = _unpack_from("<I", view, at)
        at += 4
        if n > len(view) - at:
            raise WireError("dict longer than the frame")
        out = {}
        for _ in range(n):
            key, at = _decode(view, at, depth + 1)
            if not _isinstance(key, str):
                raise WireError("dict key is not text")
            out[key], at = _decode(view, at, depth + 1)
        return out, at
    if tag == b"a":
        _need(view, at, 2)
        code, ndim = _unpack_from("<BB", view, at)
        at += 2
        if code >= len(WIRE_DTYPES):
            raise WireError(f"unknown array dtype code {code}")
        _need(view, at, 8 * ndim)
        shape = _unpack_from(f"<{ndim}Q", view, at)
        at += 8 * ndim
        dtype = np.dtype(WIRE_DTYPES[code])
        count = 1
        for dim in shape:
            count *= dim
        nbytes = count * dtype.itemsize
        _need(view, at, nbytes)
        arr = np.frombuffer(view[at:at + nbytes], dtype=dtype).reshape(shape).copy()
        return arr, at + nbytes
    raise WireError(f"unknown value tag {tag!r}")


def frame(seq: int, value) -> bytes:
    """One frame holding ``value``."""
    payload = encode(value)
    return _HEADER.pack(MAGIC, seq & 0xFFFFFFFF, len(payload)) + payload


class FrameReader:
    """Splits a byte stream into frames; malformed input raises :class:`WireError`."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.buffer = bytearray()
        self.max_frame = max_frame
        self.pending: list = []

    def feed(self, data: bytes) -> list:
        """Add ``data``; return the complete frames now available as ``(seq, payload bytes)``."""
        self.buffer += data
        frames = []
        if len(self.buffer) >= len(MAGIC) and bytes(self.buffer[:len(MAGIC)]) != MAGIC:
            raise WireError("stream does not start with a frame header")
        while len(self.buffer) >= _HEADER.size:
            magic, seq, length = _HEADER.unpack_from(self.buffer, 0)
            if magic != MAGIC:
                raise WireError("stream does not start with a frame header")
            if length > self.max_frame:
                raise WireError(f"frame of {length} bytes is larger than allowed")
            end = _HEADER.size + length
            if len(self.buffer) < end:
                break
            frames.append((seq, bytes(self.buffer[_HEADER.size:end])))
            del self.buffer[:end]
        return frames


# -- describing what code under test returned --------------------------------------------------
def _type_name(obj) -> str:
    cls = type(obj)
    module = getattr(cls, "__module__", "") or ""
    name = getattr(cls, "__qualname__", None) or cls.__name__
    return name if module in ("builtins", "") else f"{module}.{name}"


def _safe_text(fn, fallback: str) -> str:
    try:
        text = fn()
        return text if _isinstance(text, str) else fallback
    except BaseException:   # code under test (a __str__ or __repr__ of its own)
        return fallback


def array_facts(value) -> dict:
    """Facts about one value that should be an array: no judgement, never raises.

    Returns
    -------
    dict
        ``type`` (its type's name); ``array`` (an ndarray copy of its data, or
        None when there is none or it cannot travel); ``dtype`` and ``shape`` of
        that data; ``subclass`` (an ndarray subclass's name, else None);
        ``masked`` (masked entries of a masked array, else None); ``converted``
        (``"sequence"``, ``"scalar"`` or ``"__array__"`` when the data came from
        something that is not an ndarray, else None); ``problem`` (why there is
        no array: text, else None).
    """
    facts = {"type": _type_name(value), "array": None, "dtype": None, "shape": None, "subclass": None,
             "masked": None, "converted": None, "problem": None}
    if value is None:
        facts["problem"] = "None"
        return facts
    try:
        if _isinstance(value, _ndarray):
            if type(value) is not _ndarray:
                facts["subclass"] = facts["type"]
                if _isinstance(value, _MaskedArray):
                    facts["masked"] = int(np.ma.count_masked(value))
            data = _array(value.view(_ndarray) if type(value) is not _ndarray else value, copy=True)
        elif _isinstance(value, (list, tuple)):
            facts["converted"] = "sequence"
            data = _array(value)
        elif _isinstance(value, (bool, int, float, complex, np.generic)):
            facts["converted"] = "scalar"
            data = _array(value)
        elif hasattr(type(value), "__array__"):
            facts["converted"] = "__array__"
            data = _array(_asarray(value), copy=True)
        else:
            facts["problem"] = f"a {facts['type']}"
            return facts
    except BaseException as exc:   # __array__, __len__ or __iter__ of code under test
        if _isinstance(exc, KeyboardInterrupt):
            raise
        facts["problem"] = (f"a {facts['type']} that cannot be read as an array "
                            f"({type(exc).__name__}: {_safe_text(lambda e=exc: str(e), '?')})")
        return facts
    facts["dtype"] = str(data.dtype)
    facts["shape"] = [int(d) for d in data.shape]
    if _wire_dtype(data.dtype) is not None:
        facts["array"] = data
    return facts


def _describe_returned(value) -> dict:
    """Facts about a whole returned value that is not what was expected."""
    info = {"type": _type_name(value), "length": None}
    try:
        if _isinstance(value, (tuple, list)):
            info["length"] = len(value)
    except BaseException:   # a __len__ of code under test
        pass
    return info


def _split(value, expect: str) -> dict:
    """Facts about a returned value against the shape of return ``expect`` names.

    ``expect`` is ``"pair"`` (``(out, cache)``), ``"grads:K"`` (K gradients;
    a bare array when K is 1), ``"loss"`` (``(loss, gradient)``; the gradient
    may be a dict of arrays), ``"value"`` (one array), or ``"object"`` (kept,
    not described).
    """
    if expect == "object":
        return {"kind": "object", "type": _type_name(value)}
    if value is None:
        return {"kind": "none"}
    if expect == "value":
        return {"kind": "value", "items": [array_facts(value)]}
    if expect == "pair" or expect == "loss":
        try:
            ok = _isinstance(value, (tuple, list)) and len(value) == 2
            first, second = (value[0], value[1]) if ok else (None, None)
        except BaseException:   # a sequence of code under test
            ok = False
        if not ok:
            return {"kind": "shape", "got": _describe_returned(value)}
        if expect == "pair":
            return {"kind": "pair", "items": [array_facts(first)], "cache": _type_name(second)}
        if _isinstance(second, dict):
            grads = {}
            for key in list(second)[:1024]:
                grads[str(key)] = array_facts(second[key])
            return {"kind": "loss", "items": [array_facts(first)], "grads": grads}
        return {"kind": "loss", "items": [array_facts(first), array_facts(second)]}
    if expect.startswith("grads:"):
        count = int(expect.split(":")[1])
        try:
            if count == 1 and not _isinstance(value, (tuple, list)):
                items = [value]
            elif _isinstance(value, (tuple, list)) and len(value) == count:
                items = list(value)
            else:
                return {"kind": "shape", "got": _describe_returned(value)}
        except BaseException:   # a sequence of code under test
            return {"kind": "shape", "got": _describe_returned(value)}
        return {"kind": "grads", "items": [array_facts(v) for v in items]}
    raise ValueError(f"unknown expectation {expect!r}")


def arrays_inside(obj, path: str = "cache", depth: int = 0, seen=None) -> list:
    """Every ndarray reachable from ``obj`` (sequences, dicts, attributes), with a path naming it.

    Returns
    -------
    list of (str, ndarray)
        Paths like ``cache[0]``, ``cache['x']``, ``cache.x``; arrays are copies.
    """
    seen = set() if seen is None else seen
    found: list = []
    if id(obj) in seen or depth > 6 or len(found) > 256:
        return found
    seen.add(id(obj))
    try:
        if _isinstance(obj, _ndarray):
            if _wire_dtype(obj.dtype) is not None:
                found.append((path, _array(obj.view(_ndarray), copy=True)))
            return found
        if _isinstance(obj, (str, bytes, int, float, complex, bool, type(None), types.ModuleType, type)):
            return found
        if _isinstance(obj, (tuple, list)):
            for i, item in enumerate(list(obj)[:256]):
                found += arrays_inside(item, f"{path}[{i}]", depth + 1, seen)
        elif _isinstance(obj, dict):
            for key in list(obj)[:256]:
                found += arrays_inside(obj[key], f"{path}[{key!r}]", depth + 1, seen)
        elif callable(obj) and getattr(obj, "__closure__", None):
            for i, cell in enumerate(obj.__closure__):
                found += arrays_inside(cell.cell_contents, f"{path}.<closure {i}>", depth + 1, seen)
        else:
            attrs = getattr(obj, "__dict__", None)
            if _isinstance(attrs, dict):
                for key in list(attrs)[:256]:
                    found += arrays_inside(attrs[key], f"{path}.{key}", depth + 1, seen)
    except BaseException as exc:   # properties, __getitem__ of code under test
        if _isinstance(exc, KeyboardInterrupt):
            raise
    return found


def _location(exc: BaseException, files: set) -> str:
    """``file:line`` of the innermost frame of ``exc`` in one of ``files`` (else the innermost)."""
    frames = traceback.StackSummary.extract(traceback.walk_tb(exc.__traceback__), lookup_lines=False)
    frames = [f for f in frames if os.path.realpath(f.filename) != _HERE]
    if not frames:
        return ""
    mine = [f for f in frames if f.filename in files]
    frame_ = (mine or frames)[-1]
    return f"{frame_.filename}:{frame_.lineno}"


def error_facts(exc: BaseException, files: set = frozenset()) -> dict:
    """Facts about an exception raised by code under test."""
    tb = exc.__traceback__
    while tb is not None and os.path.realpath(tb.tb_frame.f_code.co_filename) == _HERE:
        tb = tb.tb_next
    text = ""
    try:
        text = "".join(traceback.format_exception(type(exc), exc, tb))
    except BaseException:   # a __str__ of code under test
        text = type(exc).__name__
    facts = {"exception": type(exc).__name__, "message": _safe_text(lambda: str(exc), "<unprintable>"),
             "traceback": text, "location": _location(exc, files), "exit_code": None,
             "not_implemented": _isinstance(exc, NotImplementedError),
             "memory": _isinstance(exc, MemoryError), "blocked": _isinstance(exc, BlockedError)}
    if _isinstance(exc, SystemExit):
        code = exc.code
        facts["exit_code"] = code if _isinstance(code, (int, type(None))) else _safe_text(lambda: str(code), "?")
    return facts


# -- the guard: what code under test may not do inside a child ------------------------------------
class BlockedError(PermissionError):
    """Raised for an action the child's guard refuses (an ImportError subclass is used for imports)."""


class BlockedImport(ImportError):
    """An import the child's guard refuses."""


_SPAWN_EVENTS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                 "os.forkpty", "os.startfile", "pty.spawn")
_LIST_EVENTS = ("os.listdir", "os.scandir", "glob.glob", "os.chdir")
_GUARDED_EVENTS = frozenset(("import", "open", *_SPAWN_EVENTS, *_LIST_EVENTS))


class Guard:
    """An audit hook that refuses imports, file access and new processes; it records each refusal.

    Parameters
    ----------
    modules : sequence of str
        Top-level names whose import (of the module or any submodule) is refused.
    paths : sequence of str
        Folders and files that may not be opened, listed or entered.
    spawn : bool
        Whether new processes may be started.
    """

    def __init__(self, modules=(), paths=(), spawn: bool = False, reference=()) -> None:
        self.modules = tuple(str(m) for m in modules if m)
        self.paths = tuple(os.path.realpath(str(p)) for p in (*paths, *reference) if p)
        self.reference = tuple(os.path.realpath(str(p)) for p in reference if p)
        self.spawn = spawn
        self.refused: list = []
        self._busy = threading.local()

    @contextlib.contextmanager
    def armed(self):
        """Record refusals inside the block (the code under test runs there); outside, only refuse."""
        previous = getattr(self._busy, "armed", False)
        self._busy.armed = True
        try:
            yield
        finally:
            self._busy.armed = previous

    def _record(self, kind: str, what: str) -> None:
        if not getattr(self._busy, "armed", False):
            return
        entry = {"kind": kind, "what": what}
        if entry not in self.refused and len(self.refused) < 64:
            self.refused.append(entry)

    def module_refused(self, name: str) -> bool:
        return any(name == m or name.startswith(m + ".") for m in self.modules)

    def _is_reference(self, path: str) -> bool:
        full = os.path.realpath(path)
        return any(full == p or full.startswith(p.rstrip(os.sep) + os.sep) for p in self.reference)

    def path_refused(self, path) -> bool:
        if _isinstance(path, int) or path is None:
            return False
        try:
            path = os.fsdecode(os.fspath(path))
        except TypeError:
            return False
        full = os.path.realpath(path)
        if full == _HERE:
            return False           # the runner's own source: libraries that read their callers' frames
        return any(full == p or full.startswith(p.rstrip(os.sep) + os.sep) for p in self.paths)

    def __call__(self, event: str, args) -> None:
        if event not in _GUARDED_EVENTS:       # most events (builtins.id, ...) are none of the guard's business
            return
        if getattr(self._busy, "on", False):
            return
        self._busy.on = True
        try:
            if event == "import" and args and _isinstance(args[0], str) and self.module_refused(args[0]):
                self._record("import", args[0].split(".")[0])
                raise BlockedImport(f"importing {args[0]} is not allowed here")
            if (event == "open" or event in _LIST_EVENTS) and args and self.path_refused(args[0]):
                path = os.fsdecode(os.fspath(args[0]))
                self._record("reference" if self._is_reference(path) else "open", path)
                raise BlockedError(f"opening {args[0]} is not allowed here")
            if not self.spawn and event in _SPAWN_EVENTS:
                self._record("spawn", event)
                raise BlockedError(f"starting processes ({event}) is not allowed here")
        finally:
            self._busy.on = False


#: Modules whose functions code under test must not replace; a replacement is reported.
WATCHED_MODULES = ("numpy", "numpy.linalg", "numpy.random", "json", "pickle", "struct", "os", "io", "time")


def _snapshot(load: bool = False) -> list:
    """``(name, attribute, namespace, value)`` of every callable attribute of the watched modules.

    ``load`` imports them first.  :func:`_replaced` compares the namespaces
    with these values by identity (not with ``id()``, which raises an audit
    event the child's hook would see hundreds of times per request).
    """
    if load:
        for name in WATCHED_MODULES:
            importlib.import_module(name)
    taken = []
    for name in WATCHED_MODULES:
        module = sys.modules.get(name)
        if module is None:
            continue
        namespace = vars(module)
        for attr, value in list(namespace.items()):
            if not attr.startswith("__") and callable(value):
                taken.append((name, attr, namespace, value))
    return taken


def _replaced(baseline: list) -> list:
    """Names of watched functions no longer what they were in ``baseline``."""
    return sorted(f"{name}.{attr}" for name, attr, namespace, value in baseline
                  if namespace.get(attr, value) is not value)


# -- module loading ------------------------------------------------------------------------------
#: Import names whose pip package has another name.
PIP_NAMES = {"cv2": "opencv-python", "PIL": "pillow", "sklearn": "scikit-learn", "skimage": "scikit-image",
             "yaml": "pyyaml", "bs4": "beautifulsoup4", "Crypto": "pycryptodome"}


class LoadError(Exception):
    """A module that cannot be found or imported; ``facts`` describes why."""

    def __init__(self, message: str, facts: dict | None = None) -> None:
        super().__init__(message)
        self.facts = facts or {}


def looks_like_path(spec: str) -> bool:
    """True when a ``--module`` value names a file or folder rather than a dotted module."""
    return spec.endswith(".py") or os.sep in spec or "/" in spec or os.path.exists(spec)


def load_module(spec: str) -> types.ModuleType:
    """Import a user module from a ``.py`` path or a dotted name, running its top-level code.

    A dotted name is found on ``sys.path`` or in the current folder, as
    ``python -m`` does.  A file inside a package (a folder with
    ``__init__.py``) is imported as part of it, so relative imports work; a
    file in a folder without ``__init__.py`` is imported as a module of the
    namespace package that folder forms, so ``from cs231n.im2col import *``
    inside ``cs231n/layers.py`` works, as does a neighbour's plain
    ``import im2col``.  The folders involved go to the front of ``sys.path``.

    Raises
    ------
    LoadError
        One line naming the module and why: no such file, not a ``.py`` file,
        or the exception its code raised (with file and line).
    """
    if not looks_like_path(spec):
        cwd = os.getcwd()
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
        try:
            return importlib.import_module(spec)
        except ModuleNotFoundError as exc:
            if exc.name and (spec == exc.name or spec.startswith(exc.name + ".")):
                raise LoadError(f"cannot import --module {spec}: no such file or module") from None
            raise _import_failure(spec, exc, None) from None
        except BaseException as exc:   # the module's own top-level code
            if _isinstance(exc, KeyboardInterrupt):
                raise
            raise _import_failure(spec, exc, None) from None
    path = os.path.abspath(spec)
    if not os.path.exists(path):
        raise LoadError(f"cannot import --module {spec}: no such file")
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "__init__.py")):
            raise LoadError(f"cannot import --module {spec}: a folder without __init__.py; give the .py file")
        path = os.path.join(path, "__init__.py")
    elif not path.endswith(".py"):
        raise LoadError(f"cannot import --module {spec}: expected a Python file (.py), got "
                        f"{os.path.basename(path)}")
    path = os.path.realpath(path)
    try:
        return _load_file(path)
    except LoadError:
        raise
    except BaseException as exc:   # the module's own top-level code
        if _isinstance(exc, KeyboardInterrupt):
            raise
        raise _import_failure(spec, exc, path) from None


def _load_file(path: str) -> types.ModuleType:
    folder = os.path.dirname(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    parts = [] if stem == "__init__" else [stem]
    top = folder
    while os.path.exists(os.path.join(top, "__init__.py")) and os.path.dirname(top) != top:
        parts.insert(0, os.path.basename(top))
        top = os.path.dirname(top)
    in_package = os.path.exists(os.path.join(folder, "__init__.py"))
    roots = [top] if in_package else [folder, os.path.dirname(folder)]
    for root in reversed(roots):
        if root in sys.path:
            sys.path.remove(root)
        sys.path.insert(0, root)
    if not in_package:
        # The folder as a namespace package: its modules import each other by
        # the folder's name (``from cs231n.im2col import ...``) or plainly.
        name = os.path.basename(folder)
        if name.isidentifier() and stem.isidentifier() and name not in sys.modules:
            module = _try_in_package(path, f"{name}.{stem}")
            if module is not None:
                return module
        return _exec_file(path, _standalone_name(path))
    dotted = ".".join(parts)
    if all(p.isidentifier() for p in parts):
        module = _try_in_package(path, dotted)
        if module is not None:
            return module
    return _exec_file(path, _standalone_name(path))


def _try_in_package(path: str, dotted: str):
    """Import ``path`` as ``dotted``; None when that name resolves to another place."""
    package = dotted.rpartition(".")[0] if not path.endswith("__init__.py") else dotted
    if package:
        try:
            parent = importlib.import_module(package)
        except ImportError as exc:
            if _isinstance(exc, BlockedImport):
                raise
            return None
        locations = [os.path.realpath(p) for p in getattr(parent, "__path__", [])]
        if os.path.realpath(os.path.dirname(path)) not in locations:
            return None
    if path.endswith("__init__.py"):
        return sys.modules[dotted]
    return _exec_file(path, dotted)


def _exec_file(path: str, module_name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(module_name)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        if previous is None:
            sys.modules.pop(module_name, None)
        else:
            sys.modules[module_name] = previous
        raise
    return module


def _standalone_name(path: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    stem = "".join(c if c.isalnum() or c == "_" else "_" for c in stem)
    return f"cnncheck_user_{stem}_{zlib.crc32(path.encode()):08x}"


def _import_failure(spec: str, exc: BaseException, path: str | None) -> LoadError:
    files = {path} if path else set()
    facts = error_facts(exc, files)
    if _isinstance(exc, SystemExit):
        text = f"called sys.exit({exc.code!r}) while importing"
    else:
        text = f"{facts['exception']}: {facts['message']}"
        if facts["location"] and not _isinstance(exc, SyntaxError):
            file_, _, line = facts["location"].rpartition(":")
            text += f" ({os.path.basename(file_)}:{line})"
    hint = ""
    if _isinstance(exc, ModuleNotFoundError) and exc.name and not _isinstance(exc, BlockedImport):
        top = exc.name.split(".")[0]
        ancestors = []
        folder = os.path.dirname(path) if path else os.getcwd()
        while folder and os.path.dirname(folder) != folder:
            ancestors.append(os.path.basename(folder))
            folder = os.path.dirname(folder)
        if top in ancestors:
            above = os.path.dirname(os.path.dirname(path)) if path else ""
            module = ".".join([top, *_tail_after(path, top)]) if path else top
            hint = (f"; {top!r} is a folder above the file: run from {above or 'the folder above it'} "
                    f"with --module {module}")
        elif importlib.util.find_spec(top) is None if top.isidentifier() else True:
            hint = f"; the package {top!r} is not installed: pip install {PIP_NAMES.get(top, top)}"
    facts["hint"] = hint
    return LoadError(f"cannot import --module {spec}: {text}{hint}", facts)


def _tail_after(path: str, top: str) -> list:
    parts = os.path.splitext(path)[0].split(os.sep)
    index = len(parts) - 1 - parts[::-1].index(top)
    return parts[index + 1:]


def code_file(fn) -> str | None:
    """The file the code of ``fn`` (or what it wraps) was compiled from, or None."""
    seen = 0
    while fn is not None and seen < 8:
        code = getattr(fn, "__code__", None)
        if code is not None:
            return code.co_filename
        fn = getattr(fn, "__wrapped__", None) or getattr(fn, "func", None) or getattr(fn, "__func__", None)
        seen += 1
    return None


def function_facts(fn, reference_dirs=()) -> dict:
    """Where a function is defined and whether its code comes from one of ``reference_dirs``."""
    filename = code_file(fn)
    line = None
    try:
        line = fn.__code__.co_firstlineno
    except AttributeError:
        pass
    location = f"{filename}:{line}" if filename and line else (filename or "")
    reference = False
    if filename:
        full = os.path.realpath(filename)
        reference = any(full.startswith(os.path.realpath(d).rstrip(os.sep) + os.sep) for d in reference_dirs)
    return {"callable": callable(fn), "location": location, "reference": reference,
            "missing": getattr(fn, "cnncheck_missing", None) or None}


# -- the server --------------------------------------------------------------------------------
_HERE = os.path.realpath(__file__)


class Server:
    """Runs the requests of one caller against the functions of one set of code under test.

    Parameters
    ----------
    functions : dict of str to callable, optional
        Functions callable by name (cnncheck's own implementations); a
        ``load`` request adds a module's.
    reference_dirs : sequence of str
        Folders whose code counts as cnncheck's reference (reported in facts).
    quiet : bool
        Send what code under test prints to stdout to stderr instead
        (in cnncheck's own process, so reports on stdout stay clean).

    Every request is a dict with an ``op`` (see the ``_op_*`` methods);
    every response is a dict of facts, with ``refused`` (the guard's new
    refusals) and ``replaced`` (watched functions replaced since the start).
    """

    def __init__(self, functions: dict | None = None, *, reference_dirs=(), quiet: bool = False,
                 guard: Guard | None = None, watch: bool = False) -> None:
        self.functions: dict = dict(functions or {})
        self.files: set = set()
        self.objects: dict = {}
        self.next_handle = 1
        self.reference_dirs = tuple(reference_dirs)
        self.quiet = quiet
        self.guard = guard
        self.modules: list = []
        self._reported_refusals = 0
        self._baseline = _snapshot(load=True) if watch else None
        # numpy's error state (np.seterr) that code under test set at import applies to its own calls only.
        self._own_errors = np.geterr()
        self._user_errors = dict(self._own_errors)

    # -- dispatch ---------------------------------------------------------------------------
    def handle(self, request: dict) -> dict:
        op = request.get("op")
        method = getattr(self, f"_op_{op}", None)
        if method is None:
            raise ValueError(f"unknown request {op!r}")
        response = method(request)
        if self.guard is not None:
            new = self.guard.refused[self._reported_refusals:]
            self._reported_refusals = len(self.guard.refused)
            response["refused"] = list(new)
        if self._baseline is not None:
            response["replaced"] = _replaced(self._baseline)
        return response

    # -- helpers ----------------------------------------------------------------------------
    def _store(self, obj) -> int:
        handle = self.next_handle
        self.next_handle += 1
        self.objects[handle] = obj
        return handle

    def _resolve(self, ref):
        """The object a reference ``[handle, step, ...]`` names; steps: int index, "key", ".attr"."""
        obj = self.objects[int(ref[0])]
        for step in ref[1:]:
            if _isinstance(step, str) and step.startswith("."):
                obj = getattr(obj, step[1:])
            else:
                obj = obj[step]
        return obj

    def _function(self, fn):
        if _isinstance(fn, str):
            return self.functions[fn]
        return self._resolve(fn["ref"] if _isinstance(fn, dict) else fn)

    def _materialise(self, spec: dict):
        """An argument from its description: a fresh copy of a value, or a stored object."""
        if "ref" in spec:
            return self._resolve(spec["ref"])
        value = spec.get("value")
        if _isinstance(value, _ndarray):
            return _lay_out(value, spec.get("layout", "C"))
        if _isinstance(value, dict):
            return {k: (_array(v, copy=True) if _isinstance(v, _ndarray) else v) for k, v in value.items()}
        if _isinstance(value, list):
            return list(value)
        return value

    def _arguments(self, request: dict) -> tuple:
        args = [self._materialise(a) for a in request.get("args", ())]
        kwargs = {k: self._materialise(a) for k, a in (request.get("kwargs") or {}).items()}
        return args, kwargs

    def _armed(self):
        return self.guard.armed() if self.guard is not None else contextlib.nullcontext()

    @contextlib.contextmanager
    def _output(self):
        if self.quiet:
            with contextlib.redirect_stdout(sys.stderr):
                yield
        else:
            yield

    def _invoke(self, fn, args, kwargs):
        """Call code under test: ``(True, value)`` or ``(False, error facts)``."""
        try:
            with self._output(), self._armed(), np.errstate(**self._user_errors):
                return True, fn(*args, **kwargs)
        except BaseException as exc:   # the code under test, and only it
            if _isinstance(exc, KeyboardInterrupt) and self.guard is None:
                raise
            return False, error_facts(exc, self.files)

    # -- operations -------------------------------------------------------------------------
    def _op_ping(self, request: dict) -> dict:
        return {"pong": True, "pid": os.getpid(), "uid": os.getuid() if hasattr(os, "getuid") else None}

    def _op_load(self, request: dict) -> dict:
        """Import ``module``; describe the functions in ``names`` it defines."""
        try:
            with self._armed():
                module = load_module(str(request["module"]))
        except LoadError as exc:
            return {"loaded": False, "message": str(exc), "error": exc.facts}
        finally:
            self._user_errors = np.geterr()
            np.seterr(**self._own_errors)
        self.modules.append(module)
        module_file = getattr(module, "__file__", None) or ""
        if module_file:
            self.files.add(module_file)
        found = {}
        for name in request.get("names", ()):
            try:
                fn = getattr(module, name, None)
            except BaseException:   # a module __getattr__ of code under test
                fn = None
            if fn is None or not callable(fn):
                continue
            key = f"{request.get('prefix', '')}{name}"
            self.functions[key] = fn
            found[name] = function_facts(fn, self.reference_dirs)
            filename = code_file(fn)
            if filename:
                self.files.add(filename)
        borrowed = []
        for attr, value in list(vars(module).items())[:4096]:
            if _isinstance(value, types.ModuleType):
                origin = getattr(value, "__file__", None) or ""
            elif callable(value):
                origin = code_file(value) or ""
            else:
                continue
            if origin and _under(origin, self.reference_dirs):
                borrowed.append(attr)
        return {"loaded": True, "file": module_file, "functions": found, "borrowed": borrowed}

    def _op_call(self, request: dict) -> dict:
        """Call ``fn`` on ``args``/``kwargs``; keep the result; describe it against ``expect``."""
        fn = self._function(request["fn"])
        args, kwargs = self._arguments(request)
        if request.get("seed") is not None:
            _np_seed(int(request["seed"]))      # the course's models draw their weights from it
        ok, value = self._invoke(fn, args, kwargs)
        handle = self._store({"args": args, "kwargs": kwargs, "result": value if ok else None})
        if not ok:
            return {"handle": handle, "raised": value}
        return {"handle": handle, "raised": None, "returned": self._facts(value, request.get("expect", "value"))}

    def _facts(self, value, expect: str) -> dict:
        try:
            return _split(value, expect)
        except BaseException as exc:   # code under test reached through the value
            if _isinstance(exc, KeyboardInterrupt):
                raise
            return {"kind": "shape", "got": {"type": _type_name(value), "length": None}}

    def _op_fetch(self, request: dict) -> dict:
        """Describe the stored object at ``ref`` now: ``as`` is "array" or "arrays" (all inside it)."""
        try:
            obj = self._resolve(request["ref"])
        except BaseException as exc:   # a container of code under test
            if _isinstance(exc, KeyboardInterrupt):
                raise
            return {"missing": True}
        if request.get("as") == "arrays":
            return {"arrays": [[p, a] for p, a in arrays_inside(obj, request.get("name", "cache"))]}
        if request.get("as") == "dict":
            try:
                items = dict(obj)
            except BaseException:   # not a mapping
                return {"missing": True}
            return {"dict": {str(k): _plain(v) for k, v in list(items.items())[:256]}}
        return {"item": array_facts(obj)}

    def _op_drop(self, request: dict) -> dict:
        for handle in request.get("handles", ()):
            self.objects.pop(int(handle), None)
        return {}

    def _op_probe(self, request: dict) -> dict:
        """Centred perturbations of one input: the output at ``x + h e`` and ``x - h e`` for each point.

        ``target`` is the index of the argument perturbed (or a ``ref`` step
        list into it), ``index`` the flat element indices or ``directions``
        the +-1 directions; ``item`` says which element of the return is the
        output (0 of ``(out, cache)``).  Outputs come back stacked as float64,
        ``plus`` and ``minus`` of shape (points, outputs); a call that raises or
        returns something unusable stops the probe and is described.
        """
        fn = self._function(request["fn"])
        args, kwargs = self._arguments(request)
        spec = request["target"]
        target = self._resolve(spec["ref"]) if _isinstance(spec, dict) else _target(args, kwargs, spec)
        if not _isinstance(target, _ndarray) or target.dtype.kind != "f":
            return {"failed": {"at": 0, "problem": "target is not a float array"}}
        h = float(request["h"])
        item = request.get("item", 0)
        size = int(request["size"])
        flat = target.reshape(-1)
        writable_view = np.shares_memory(flat, target)
        indices = request.get("index")
        directions = request.get("directions")
        count = len(indices) if indices is not None else len(directions)
        plus = np.empty((count, size))
        minus = np.empty((count, size))
        original = target.copy()
        for k in range(count):
            for sign, into in ((1.0, plus), (-1.0, minus)):
                if indices is not None:
                    i = int(indices[k])
                    if writable_view:
                        flat[i] = original.reshape(-1)[i] + sign * h
                    else:
                        target[np.unravel_index(i, target.shape)] = original.reshape(-1)[i] + sign * h
                else:
                    target[...] = original + sign * h * directions[k].reshape(target.shape)
                ok, value = self._invoke(fn, args, kwargs)
                if not ok:
                    target[...] = original
                    return {"failed": {"at": k, "raised": value}}
                try:
                    # Read the output before restoring the input: it may be the input itself (out = x).
                    out = value[item] if item is not None else value
                    data = _array(out, dtype=np.float64, copy=True).reshape(-1)
                except BaseException as exc:   # the returned value of code under test
                    if _isinstance(exc, KeyboardInterrupt):
                        raise
                    target[...] = original
                    return {"failed": {"at": k, "returned": self._facts(value, request.get("expect", "pair"))}}
                target[...] = original
                if data.size != size:
                    return {"failed": {"at": k, "returned": self._facts(value, request.get("expect", "pair"))}}
                into[k] = data
        return {"plus": plus, "minus": minus, "failed": None}

    def _op_time(self, request: dict) -> dict:
        """Time calls of ``fn``: see :func:`measure`; arguments are materialised once."""
        fn = self._function(request["fn"])
        args, kwargs = self._arguments(request)
        try:
            with self._output(), self._armed(), np.errstate(**self._user_errors):
                times, loops, limited = measure(
                    lambda: fn(*args, **kwargs), repeat=int(request.get("repeat", 5)),
                    min_time=float(request.get("min_time", 0.5)),
                    max_seconds=request.get("max_seconds"), round_time=float(request.get("round_time", 1e-3)),
                    max_loops=int(request.get("max_loops", 100_000)))
        except BaseException as exc:   # the code under test, and only it
            if _isinstance(exc, KeyboardInterrupt) and self.guard is None:
                raise
            return {"raised": error_facts(exc, self.files)}
        return {"raised": None, "times": list(times), "loops": loops, "limited": limited}


def _under(path: str, dirs) -> bool:
    full = os.path.realpath(path)
    return any(full.startswith(os.path.realpath(d).rstrip(os.sep) + os.sep) for d in dirs)


def _plain(value):
    """A value as the wire can carry it: arrays copied, others as text unless simple."""
    if _isinstance(value, _ndarray):
        return _array(value.view(_ndarray), copy=True) if _wire_dtype(value.dtype) is not None else repr(value)
    if value is None or _isinstance(value, (bool, int, float, str)):
        return value
    if _isinstance(value, (tuple, list)):
        return [_plain(v) for v in list(value)[:256]]
    return _safe_text(lambda: repr(value), f"<{_type_name(value)}>")


def _target(args: list, kwargs: dict, target):
    if _isinstance(target, int):
        return args[target]
    if _isinstance(target, str):
        return kwargs[target]
    obj = args[target[0]] if _isinstance(target[0], int) else kwargs[target[0]]
    for step in target[1:]:
        obj = getattr(obj, step[1:]) if _isinstance(step, str) and step.startswith(".") else obj[step]
    return obj


def _lay_out(value: np.ndarray, layout: str) -> np.ndarray:
    """A fresh copy of ``value`` in memory layout ``layout``.

    ``"C"`` C-contiguous; ``"F"`` Fortran-ordered; ``"T"`` a view with
    reversed strides onto transposed storage; ``"S"`` a strided view (every
    other element of a buffer twice as large along the last axis).
    """
    if layout == "F":
        return np.asfortranarray(value).copy(order="F")
    if layout == "T":
        if value.ndim < 2:
            return value.copy()
        order = tuple(reversed(range(value.ndim)))
        return value.transpose(order).copy().transpose(order)
    if layout == "S":
        if value.ndim == 0:
            return value.copy()
        shape = (*value.shape[:-1], 2 * value.shape[-1])
        buffer = np.zeros(shape, dtype=value.dtype)
        view = buffer[..., ::2]
        view[...] = value
        return view
    return _array(value, copy=True, order="C")


# -- timing -------------------------------------------------------------------------------------
def measure(call, *, repeat: int = 5, min_time: float = 0.5, max_seconds=None, round_time: float = 1e-3,
            max_loops: int = 100_000, clock=None) -> tuple:
    """Time ``call``: warm up once, group calls so a run lasts ``round_time``, then time runs.

    Runs go on until there are at least ``repeat`` of them and together they
    last ``min_time``; when ``max_seconds`` is given, no new run starts once
    the runs have taken that long (at least one run is made), and the
    measurement is *limited*.

    Returns
    -------
    (times, loops, limited) : (list of float, int, bool)
        Seconds per call of each run, calls per run, whether ``max_seconds``
        stopped it early.
    """
    clock = clock or _perf_counter
    start = clock()
    call()                                   # warm-up
    first = clock() - start
    loops = 1
    if first < round_time:
        loops = max(1, min(max_loops, int(round_time / max(first, 1e-9))))
        for _ in range(5):
            t0 = clock()
            for _ in range(loops):
                call()
            spent = clock() - t0
            if spent >= round_time or loops >= max_loops:
                break
            loops = min(max_loops, max(loops * 2, int(loops * round_time / max(spent, 1e-9))))
    times: list = []
    total = 0.0
    limited = False
    while len(times) < repeat or total < min_time:
        if max_seconds is not None and times and total >= max_seconds:
            limited = True
            break
        t0 = clock()
        for _ in range(loops):
            call()
        spent = clock() - t0
        total += spent
        times.append(spent / loops)
        if len(times) >= 100_000:
            break
    return times, loops, limited


# -- the child process ------------------------------------------------------------------------------
def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = _os_write(fd, view)
        view = view[written:]


def _read_frame(fd: int, reader: FrameReader):
    """The next ``(seq, payload)`` frame from ``fd``, or None at the end of the stream."""
    while not reader.pending:
        chunk = _os_read(fd, 1 << 20)
        if not chunk:
            return None
        reader.pending.extend(reader.feed(chunk))
    return reader.pending.pop(0)


def _set_memory_limit(extra) -> bool:
    if extra is None:
        return False
    try:
        import resource
        with open("/proc/self/status", encoding="ascii") as f:
            current = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
        target = current + int(extra)
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            target = min(target, hard)
        resource.setrlimit(resource.RLIMIT_AS, (target, target))
    except (ImportError, OSError, ValueError, StopIteration):
        return False
    return True


def _drop_privileges(uid, gid) -> int | None:
    """Become ``uid``/``gid`` when running as root; the uid in force afterwards, or None where unknown."""
    if uid is None or not hasattr(os, "setuid"):
        return os.getuid() if hasattr(os, "getuid") else None
    if os.getuid() == 0:
        try:
            os.setgroups([])
            os.setgid(int(gid))
            os.setuid(int(uid))
        except (OSError, ValueError):
            pass
    return os.getuid()


def child_main(argv) -> None:
    """Serve requests from the parent: ``argv`` is ``[script, REQUEST_FD, RESPONSE_FD]``.

    The first request is the setup: ``sys_path``, ``cwd``, ``memory_limit``
    (bytes added to what is mapped now), ``uid``/``gid`` to drop to when
    root, and the guard's ``forbid_modules``, ``forbid_paths`` and ``spawn``.
    Then one response per request, until ``quit`` or the end of the request
    stream; the child ends with ``os._exit`` so threads or ``atexit``
    handlers of code under test cannot keep it alive.
    """
    request_fd, response_fd = int(argv[1]), int(argv[2])
    reader = FrameReader()
    got = _read_frame(request_fd, reader)
    if got is None:
        os._exit(3)
    seq, payload = got
    setup = decode(payload)
    sys.path[:] = [p for p in setup.get("sys_path", sys.path) if p]
    sys.dont_write_bytecode = True
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass
    import faulthandler
    faulthandler.enable(file=sys.stderr)
    if setup.get("cwd"):
        os.chdir(setup["cwd"])
    uid = _drop_privileges(setup.get("uid"), setup.get("gid"))
    limited = _set_memory_limit(setup.get("memory_limit"))
    guard = Guard(setup.get("forbid_modules", ()), setup.get("forbid_paths", ()), bool(setup.get("spawn")),
                  setup.get("reference_dirs", ()))
    server = Server(reference_dirs=setup.get("reference_dirs", ()), guard=guard, watch=True)
    sys.addaudithook(guard)
    _write_all(response_fd, frame(seq, {"ready": True, "memory_limited": limited, "uid": uid,
                                        "pid": os.getpid()}))
    while True:
        got = _read_frame(request_fd, reader)
        if got is None:
            break
        seq, payload = got
        request = decode(payload)
        if request.get("op") == "quit":
            break
        try:
            response = server.handle(request)
            data = frame(seq, {"ok": response})
        except MemoryError:
            data = frame(seq, {"oom": True})
        except BaseException:   # cnncheck's own failure in the child: the parent reports it
            data = frame(seq, {"internal": traceback.format_exc()})
        _flush()
        _write_all(response_fd, data)
    _flush()
    os._exit(0)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:   # a stream code under test replaced
            pass


if __name__ == "__main__":
    child_main(sys.argv)
