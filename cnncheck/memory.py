"""Memory guard: estimate what a check or a benchmark needs and refuse what cannot fit.

A gradient check of a large input can need many times the input's size
(numerical gradients in float64, copies kept to detect in-place changes,
the im2col buffer of a convolution).  Running it anyway ends in swapping or
in the kernel's out-of-memory killer; :func:`check_fits` turns that into one
clear error before anything is allocated.

The estimates count array bytes only (no interpreter overhead) and are
meant to be the right order of magnitude, erring on the large side.
"""

from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from cnncheck.errors import CnnCheckError
from cnncheck.specs import LayerSpec

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)


def parse_size(text) -> int:
    """Bytes in a human size such as ``512M``, ``2G``, ``1.5GiB`` or ``1048576``.

    Units are binary (``K`` = 1024 bytes); ``B``, ``KB``/``KiB`` and the like
    are accepted and mean the same.

    Parameters
    ----------
    text : str or int

    Returns
    -------
    int
        A positive number of bytes.
    """
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        value = int(text)
    else:
        match = _SIZE_RE.match(str(text))
        if match is None:
            raise CnnCheckError(f"a memory size looks like 512M, 2G or 1.5GiB; got {text!r}")
        number, unit, suffix = match.groups()
        if suffix and suffix.upper() == "IB" and not unit:
            raise CnnCheckError(f"a memory size looks like 512M, 2G or 1.5GiB; got {text!r}")
        value = int(float(number) * _UNITS[unit.upper()])
    if value < 1:
        raise CnnCheckError(f"a memory size must be positive, got {text!r}")
    return value


def format_bytes(n: float) -> str:
    """``n`` bytes as a short human string: ``1.5 GiB``, ``12.0 MiB``, ``300 B``, ``3.2e+12 TiB``."""
    n = float(n)
    if abs(n) >= 1 << 50:
        return f"{n / (1 << 40):.2g} TiB"
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run needs at its peak, with the parts that add up to it.

    Attributes
    ----------
    total : int
        Sum of ``parts``.
    parts : dict of str to int
        For example ``inputs``, ``outputs``, ``gradients``, ``numerical``,
        ``copies``, ``im2col``, ``padded``.
    """

    total: int
    parts: dict = field(default_factory=dict)

    @classmethod
    def from_parts(cls, **parts: int) -> "MemoryEstimate":
        """An estimate whose total is the sum of the given non-zero parts."""
        kept = {name: int(n) for name, n in parts.items() if n}
        return cls(sum(kept.values()), kept)

    def describe(self) -> str:
        """``about 1.2 GiB (im2col 900.0 MiB, inputs 200.0 MiB, ...)``, largest part first."""
        detail = ", ".join(f"{name} {format_bytes(n)}"
                           for name, n in sorted(self.parts.items(), key=lambda kv: -kv[1]))
        return f"about {format_bytes(self.total)}" + (f" ({detail})" if detail else "")


def _sizes(spec: LayerSpec, params: Mapping) -> tuple:
    """(elements of the inputs with gradients, of the other inputs, of the output, of the workspace)."""
    shapes = spec.shapes(params)
    grads = set(spec.grads)
    n_grad = sum(math.prod(shape) for name, shape in shapes.items() if name in grads)
    n_data = sum(math.prod(shape) for name, shape in shapes.items()
                 if name not in grads and name not in ("out", "workspace"))
    n_out = math.prod(shapes.get("out", spec.output_shape(params)))
    n_work = math.prod(shapes.get("workspace", (0,)))
    return n_grad, n_data, n_out, n_work


def input_elements(spec: LayerSpec, params: Mapping) -> int:
    """Elements in all inputs with gradients, from ``params`` without allocating."""
    return _sizes(spec, params)[0]


def estimate_gradcheck(spec: LayerSpec, params: Mapping, dtype="float64", *, mode: str = "full") -> MemoryEstimate:
    """Peak bytes a gradient check of ``spec`` with resolved ``params`` needs.

    Counts the inputs and the upstream gradient, the forward output, the
    analytic and reference gradients, copies of the inputs (the session's own,
    and the ones kept to detect writes), the probed outputs of one batch of
    centred differences (float64), and the layer's workspace (``spec.shapes``).
    """
    itemsize = np.dtype(dtype).itemsize
    n_grad, n_data, n_out, n_work = _sizes(spec, params)
    batch = min(n_grad, max(1, (1 << 21) // max(1, 2 * n_out))) if mode != "directional" else 10
    return MemoryEstimate.from_parts(
        inputs=(n_grad + n_data + n_out) * itemsize,
        outputs=2 * n_out * itemsize + 2 * n_out * 8,
        gradients=2 * n_grad * itemsize + n_grad * 8,
        copies=3 * (n_grad + n_data) * itemsize,
        probes=2 * batch * n_out * 8,
        workspace=n_work * itemsize,
    )


def estimate_bench(spec: LayerSpec, params: Mapping, dtype="float64") -> MemoryEstimate:
    """Peak bytes one timed forward plus backward pass of ``spec`` needs (inputs, output, gradients,
    workspace, and the reference's results kept for the comparison)."""
    itemsize = np.dtype(dtype).itemsize
    n_grad, n_data, n_out, n_work = _sizes(spec, params)
    return MemoryEstimate.from_parts(
        inputs=(n_grad + n_data + n_out) * itemsize,
        outputs=2 * n_out * itemsize,
        gradients=2 * n_grad * itemsize,
        workspace=n_work * itemsize,
    )


def _meminfo_available(path: str = "/proc/meminfo") -> int | None:
    """``MemAvailable`` from a meminfo file, in bytes; None when absent."""
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    value, unit = line.split()[1:3]
                    return int(value) * (1024 if unit.lower() == "kb" else 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_available(root: str = "/sys/fs/cgroup", self_cgroup: str = "/proc/self/cgroup") -> int | None:
    """Room left under this process's cgroup v2 memory limit, in bytes; None without one."""
    try:
        with open(self_cgroup, encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            base = os.path.join(root, line[3:].lstrip("/"))
            try:
                with open(os.path.join(base, "memory.max"), encoding="ascii") as f:
                    limit = f.read().strip()
                with open(os.path.join(base, "memory.current"), encoding="ascii") as f:
                    current = int(f.read().strip())
            except (OSError, ValueError):
                return None
            if limit == "max":
                return None
            try:
                return max(0, int(limit) - current)
            except ValueError:
                return None
    return None


def _sysconf_available() -> int | None:
    """Free physical pages times page size where ``os.sysconf`` knows them."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _windows_available() -> int | None:
    """``ullAvailPhys`` from ``GlobalMemoryStatusEx`` on Windows."""
    if sys.platform != "win32":
        return None
    import ctypes

    class MEMORYSTATUSEX(ctypes.Structure):
        _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong),
                    ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
                    ("ullTotalPageFile", ctypes.c_ulonglong), ("ullAvailPageFile", ctypes.c_ulonglong),
                    ("ullTotalVirtual", ctypes.c_ulonglong), ("ullAvailVirtual", ctypes.c_ulonglong),
                    ("ullAvailExtendedVirtual", ctypes.c_ulonglong)]

    status = MEMORYSTATUSEX()
    status.dwLength = ctypes.sizeof(MEMORYSTATUSEX)
    if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
        return None
    return int(status.ullAvailPhys)


def available_memory() -> int | None:
    """Bytes of memory a new allocation can use without swapping, or None when unknown.

    Linux: ``MemAvailable`` from ``/proc/meminfo``, lowered to the room left
    under a cgroup v2 memory limit (containers).  Elsewhere: free physical
    pages from ``os.sysconf``, or ``GlobalMemoryStatusEx`` on Windows.
    """
    candidates = [_meminfo_available(), _cgroup_available()]
    found = [c for c in candidates if c is not None]
    if found:
        return min(found)
    for probe in (_sysconf_available, _windows_available):
        value = probe()
        if value is not None:
            return value
    return None


def check_fits(estimate, force: bool = False, *, available: int | None = None) -> None:
    """Raise when ``estimate`` bytes would not fit in the memory available now.

    Parameters
    ----------
    estimate : MemoryEstimate or int
        What the run needs.
    force : bool
        Skip the check (``--force``).
    available : int, optional
        Bytes available; read with :func:`available_memory` when None.  When
        that is unknown too, nothing is refused.

    Raises
    ------
    CnnCheckError
        ``needs about X GiB but only Y GiB is available; use a smaller --shape or --force``.
    """
    if force:
        return
    total = estimate.total if isinstance(estimate, MemoryEstimate) else int(estimate)
    if available is None:
        available = available_memory()
    if available is None or total <= available:
        return
    raise CnnCheckError(
        f"needs about {format_bytes(total)} but only {format_bytes(available)} is available; "
        "use a smaller --shape or --force"
    )


def guard(pairs, *, purpose: str = "gradcheck", dtype="float64", mode: str = "full", parallel: int = 1,
          memory_limit: int | None = None, force: bool = False, available: int | None = None) -> MemoryEstimate | None:
    """Refuse a run whose largest check or measurement would not fit in memory.

    Checks and measurements run one after another, so the peak is the
    largest single estimate, times ``parallel`` when that many run at once.

    Parameters
    ----------
    pairs : iterable of (LayerSpec, dict)
        Each spec with its resolved parameters.
    purpose : {"gradcheck", "bench"}
        Which estimate to use (:func:`estimate_gradcheck` or :func:`estimate_bench`).
    dtype : str
    mode : str
        The gradcheck mode (``auto`` is estimated as ``full``, the larger).
    parallel : int
        How many run at the same time (``--jobs``).
    memory_limit : int, optional
        A per-process cap (``--memory-limit``); one run must fit under it too.
    force : bool
        Skip every test and return the estimate (``--force``).
    available : int, optional
        Bytes available; read with :func:`available_memory` when None.

    Returns
    -------
    MemoryEstimate or None
        The largest single estimate; None when ``pairs`` is empty.

    Raises
    ------
    CnnCheckError
        When it would not fit (see :func:`check_fits`).
    """
    if purpose not in ("gradcheck", "bench"):
        raise ValueError(f"purpose must be 'gradcheck' or 'bench', got {purpose!r}")
    estimates = [estimate_gradcheck(spec, params, dtype, mode=mode) if purpose == "gradcheck"
                 else estimate_bench(spec, params, dtype) for spec, params in pairs]
    if not estimates:
        return None
    largest = max(estimates, key=lambda e: e.total)
    if force:
        return largest
    if memory_limit is not None and largest.total > memory_limit:
        raise CnnCheckError(
            f"needs about {format_bytes(largest.total)} but --memory-limit allows {format_bytes(memory_limit)}; "
            "use a smaller --shape, a larger --memory-limit, or --force"
        )
    check_fits(largest.total * max(1, int(parallel)), force, available=available)
    return largest
