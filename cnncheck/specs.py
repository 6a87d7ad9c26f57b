"""What to run: a layer is one :class:`LayerSpec`.

A spec says everything cnncheck needs to know about a layer, independently of
any implementation, and no other module learns a layer's name:

* the course's **function names** a user module defines (``functions``) and
  the **call convention**: forward's positional arguments (``inputs``, each
  an :class:`Input` whose role says whether it has a gradient, is data such
  as labels, a constant such as ``G``, or a parameter dict such as
  ``conv_param``) and what it returns (``protocol``: ``"layer"``,
  ``out, cache = forward(...)`` then ``grads = backward(dout, cache)``;
  ``"loss"``, ``loss, dx = f(x, y)``);
* its **parameters** (:class:`Param`: name, kind, default, help, range), from
  which the command line options are generated;
* the **battery** of checks: named :class:`Geometry` records (the course
  notebook's first), the input generator ``build``, the layer's reference
  implementation, state a parameter dict may hold and write by design
  (running means), and an optional subgradient check at kinks;
* **sizes** for the memory estimate (``shapes``) and **work** for bench
  (``flops`` or ``bytes``).

An :class:`Impl` is one implementation: a name and its functions.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from cnncheck.errors import CnnCheckError

#: Roles of a forward argument.
ROLES = ("grad", "data", "const", "config")

#: Kinds of parameter values.
KINDS = ("shape", "int", "float", "kernel", "choice", "seed")


def as_int(value, name: str) -> int:
    """``value`` as a Python int, refusing floats, bools and strings."""
    if isinstance(value, bool):
        raise CnnCheckError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise CnnCheckError(f"{name} must be an integer, got {value!r}") from None
    try:
        return operator.index(value)
    except TypeError:
        raise CnnCheckError(f"{name} must be an integer, got {value!r}") from None


def as_ints(value, name: str) -> tuple:
    """A comma-separated string, an int or a sequence as a tuple of ints."""
    if isinstance(value, str):
        parts = [p for p in value.replace("x", ",").split(",") if p.strip()]
        if not parts:
            raise CnnCheckError(f"{name} must be comma-separated integers, got {value!r}")
        value = parts
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value,)
    try:
        return tuple(as_int(v, name) for v in value)
    except TypeError:
        raise CnnCheckError(f"{name} must be a sequence of integers, got {value!r}") from None


@dataclass(frozen=True)
class Param:
    """One parameter of a layer.

    Attributes
    ----------
    name : str
        As users type it (``stride``, ``pool_height``); the CLI option is
        ``--pool-height`` unless ``option`` is False (then ``-p name=value`` only).
    kind : {"shape", "int", "float", "kernel", "choice", "seed"}
    default : object
        The value for gradient checks (the course notebook's).
    help : str
    bench : object, optional
        The value for bench when it differs (the notebook's timing cells).
    minimum, maximum : number, optional
        Valid range (inclusive) for ints and floats, each size of a shape.
    choices : tuple of str, optional
        Valid values of a ``choice``.
    ndim : tuple of int, optional
        Numbers of dimensions a ``shape`` may have (None: any).
    option : bool
        Generate a dedicated command-line option.
    """

    name: str
    kind: str
    default: Any
    help: str
    bench: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple | None = None
    ndim: tuple | None = None
    option: bool = True

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parse(self, value, layer: str = ""):
        """Validate and normalise ``value``; raise :class:`CnnCheckError` naming the parameter."""
        name = self.name
        where = f"{layer} {name}" if layer else name
        if self.kind == "shape":
            shape = as_ints(value, where)
            if any(d < 1 for d in shape):
                raise CnnCheckError(f"{where} must have positive sizes, got {_text(shape)}")
            if self.ndim is not None and len(shape) not in self.ndim:
                want = " or ".join(str(n) for n in self.ndim)
                raise CnnCheckError(f"{where} must have {want} sizes ({self.help}), got {_text(shape)}")
            return shape
        if self.kind == "kernel":
            kernel = as_ints(value, where)
            if len(kernel) == 1:
                kernel = kernel * 2
            if len(kernel) != 2 or min(kernel) < 1:
                raise CnnCheckError(f"{where} must be K or HH,WW with positive sizes, got {_text(kernel)}")
            return kernel
        if self.kind in ("int", "seed"):
            if self.kind == "seed" and (value is None or value == "none"):
                return None
            number = as_int(value, where)
        elif self.kind == "float":
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise CnnCheckError(f"{where} must be a number, got {value!r}") from None
            if not math.isfinite(number):
                raise CnnCheckError(f"{where} must be a finite number, got {value!r}")
        elif self.kind == "choice":
            text = str(value)
            if text not in self.choices:
                raise CnnCheckError(f"{where} must be one of {', '.join(self.choices)}, got {value!r}")
            return text
        else:
            raise ValueError(f"unknown parameter kind {self.kind!r}")
        if self.minimum is not None and number < self.minimum:
            raise CnnCheckError(f"{where} must be >= {self.minimum:g}, got {number:g}")
        if self.maximum is not None and number > self.maximum:
            raise CnnCheckError(f"{where} must be <= {self.maximum:g}, got {number:g}")
        return number

    def bench_default(self):
        return self.default if self.bench is None else self.bench


@dataclass(frozen=True)
class Input:
    """One positional argument of a forward function.

    Attributes
    ----------
    name : str
        ``x``, ``w``, ``y``, ``G``, ``conv_param``...
    role : {"grad", "data", "const", "config"}
        ``grad``: an array backward returns a gradient for (in the order
        of the grad inputs); ``data``: an array without gradient (labels);
        ``const``: a number (``G``); ``config``: a parameter dict.
    """

    name: str
    role: str = "grad"

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")


@dataclass(frozen=True)
class Geometry:
    """A named set of parameter values the battery checks a layer at.

    Attributes
    ----------
    label : str
        Short name shown in reports (``notebook``, ``pad0``...).
    params : dict
        Values that differ from the layer's defaults.
    note : str
        What the geometry is there to expose.
    uneven : bool
        Its sizes do not divide evenly (``(H + 2*pad - HH) % stride != 0``):
        the output size is floored, and an implementation that refuses such
        sizes by raising is not failed for it; one that returns a result
        must return the floored one.
    """

    label: str
    params: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""
    uneven: bool = False


@dataclass(frozen=True)
class Sample:
    """Concrete arguments for one call of a forward function.

    Attributes
    ----------
    values : dict
        One value per forward input, by name (arrays, numbers, parameter dicts).
    dout : ndarray or None
        Upstream gradient of the output's shape (None for a loss).
    """

    values: dict
    dout: np.ndarray | None


@dataclass(frozen=True)
class Builtin:
    """An implementation a spec ships with, named by import paths (loaded when a registry is built).

    Attributes
    ----------
    name : str
        ``naive``, ``fast``, ``numpy``, ``torch``...
    forward, backward : str
        ``"module:function"``; ``backward`` is "" for a loss.
    backend : str
        For reports; ``"kernels"`` stands for the backend of cnncheck's
        compiled kernels (``cython`` or ``numpy``).
    requires : str
        A module that must be importable for this implementation to exist (``torch``).
    """

    name: str
    forward: str
    backward: str = ""
    backend: str = ""
    requires: str = ""


@dataclass(frozen=True)
class Impl:
    """One implementation of a layer.

    Attributes
    ----------
    layer : str
        Registry name of the layer (``conv``).
    name : str
        Name users select with ``--impl`` (``naive``, ``fast``, ``layers``).
    forward, backward : str
        Names of the functions in the session that runs them (a ``load``
        prefix plus the course name for a user module).  ``backward`` is ""
        for a loss.
    backend : str
        What does the work, for reports (``python loops``, ``cython``, ``user``).
    source : str
        ``builtin``, a module path or name, or an entry point.
    functions : dict
        For built-in and plugin implementations, the callables by the names
        above (run in this process); empty for a user module.
    location : str
        ``file:line`` of a user's forward (reports point there).
    missing : str
        Why the implementation cannot run (the module lacks a function), or "".
    """

    layer: str
    name: str
    forward: str
    backward: str = ""
    backend: str = ""
    source: str = "builtin"
    functions: Mapping = field(default_factory=dict, compare=False)
    location: str = ""
    missing: str = ""

    @property
    def builtin(self) -> bool:
        return self.source == "builtin"


@dataclass(frozen=True)
class LayerSpec:
    """Everything cnncheck knows about one layer (see the module docstring).

    Attributes
    ----------
    name : str
        Registry key as users type it (``conv``).
    title : str
    functions : mapping of str to (str, str)
        Impl-name suffix to the course's (forward, backward) names: ``{"":
        ("conv_forward_naive", "conv_backward_naive"), "fast": (...)}``; a
        user module's ``layers.py`` gives implementations ``layers`` and
        ``layers-fast``.
    inputs : tuple of Input
    params : tuple of Param
    build : callable(params, rng, dtype, margin, kinks) -> Sample
        Draws arguments.  ``margin`` keeps arrays that far from points
        where the layer is not differentiable; ``kinks`` asks for inputs
        *on* them instead (exact ties, zeros) for the subgradient check.
    output_shape : callable(params) -> tuple
    shapes : callable(params) -> dict of str to tuple
        Every array one pass holds (inputs, output, workspace), for the
        memory estimate.
    geometries : tuple of Geometry
        The battery's geometries, the course notebook's first.
    reference : str or None
        The implementation other ones are compared with.
    protocol : {"layer", "loss"}
    state : tuple of str
        Keys of a parameter dict the forward may write by design.
    subgradient : callable(sample, params, grads) -> str or None, optional
        Judges gradients at kinks (``build(..., kinks=True)``): a message
        when they are not a valid subgradient.
    flops : callable(params) -> (forward, backward), optional
    bytes : callable(params, itemsize) -> (forward, backward), optional
    check : callable(params) -> None, optional
        Validates parameters together (a kernel larger than the input).
    sweep : mapping of str to callable(params, value) -> params, optional
        Dimension letters ``--sweep`` accepts for this layer.
    impls : tuple of Builtin
        cnncheck's own implementations of the layer, the reference among them.
    rule, rule_note : str
        The finding name of the ``subgradient`` check and what its pass
        means, for reports (``ties``; dropout's is its mask rule).
    kinks : bool
        The layer is not differentiable everywhere although it has no
        ``subgradient`` check (a relu inside a sandwich layer): failing
        elements whose one-sided differences bracket the analytic value are
        not held against it.
    """

    name: str
    title: str
    functions: Mapping[str, tuple]
    inputs: tuple
    params: tuple
    build: Callable
    output_shape: Callable
    shapes: Callable
    geometries: tuple
    reference: str | None = None
    protocol: str = "layer"
    state: tuple = ()
    subgradient: Callable | None = None
    flops: Callable | None = None
    bytes: Callable | None = None
    check: Callable | None = None
    sweep: Mapping[str, Callable] = field(default_factory=dict)
    impls: tuple = ()
    kinks: bool = False
    rule: str = "ties"
    rule_note: str = "a valid subgradient at exact ties and zeros"

    def __post_init__(self) -> None:
        if self.protocol not in ("layer", "loss"):
            raise ValueError(f"protocol must be 'layer' or 'loss', got {self.protocol!r}")
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: parameter names repeat: {names}")
        if not self.geometries:
            raise ValueError(f"{self.name}: a spec needs at least one geometry")

    # -- derived facts ------------------------------------------------------------------------
    @property
    def grads(self) -> tuple:
        """Names of the inputs with gradients, in the order backward returns them."""
        return tuple(i.name for i in self.inputs if i.role == "grad")

    @property
    def param_names(self) -> tuple:
        return tuple(p.name for p in self.params)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def has_kinks(self) -> bool:
        return self.kinks or self.subgradient is not None

    # -- parameters ---------------------------------------------------------------------------
    def defaults(self, purpose: str = "gradcheck") -> dict:
        if purpose not in ("gradcheck", "bench"):
            raise ValueError(f"purpose must be 'gradcheck' or 'bench', got {purpose!r}")
        return {p.name: (p.default if purpose == "gradcheck" else p.bench_default()) for p in self.params}

    def resolve(self, overrides: Mapping[str, Any] | None = None, *, purpose: str = "gradcheck") -> dict:
        """Defaults for ``purpose`` with ``overrides`` applied, validated.

        Keys this layer does not take, and None values, are ignored.

        Raises
        ------
        CnnCheckError
            A value out of range, or parameters that do not fit together.
        """
        values = self.defaults(purpose)
        for key, value in (overrides or {}).items():
            if key in values and value is not None:
                values[key] = value
        params = {p.name: p.parse(values[p.name], self.name) for p in self.params}
        if self.check is not None:
            self.check(params)
        return params

    def battery(self, overrides: Mapping[str, Any] | None = None) -> list:
        """``(Geometry, params)`` pairs to check: every geometry, or one when parameters are given.

        Without overrides (None values aside) the battery's geometries run,
        each resolved; with any, the single geometry ``custom`` they make.
        """
        given = {k: v for k, v in (overrides or {}).items() if v is not None and k in self.param_names}
        if given:
            return [(Geometry("custom", given, "the parameters given"), self.resolve(given))]
        return [(g, self.resolve(g.params)) for g in self.geometries]

    def make_sample(self, params: Mapping[str, Any], rng: np.random.Generator, dtype=np.float64,
                    margin: float = 0.0, kinks: bool = False) -> Sample:
        """Draw a :class:`Sample` for resolved ``params``."""
        return self.build(params, rng, np.dtype(dtype), float(margin), kinks)

    def args(self, sample: Sample) -> list:
        """Forward's positional arguments from a sample, in order."""
        return [sample.values[i.name] for i in self.inputs]

    def n_grad_elements(self, params: Mapping[str, Any]) -> int:
        shapes = self.shapes(params)
        return sum(math.prod(shapes[g]) for g in self.grads)

    def describe(self, params: Mapping[str, Any]) -> str:
        """A geometry in words: ``x (2, 4, 5, 7), w (3, 4, 3, 2), stride 1, pad 0``."""
        shapes = self.shapes(params)
        parts = [f"{name} {_text(shapes[name])}" for name in (i.name for i in self.inputs) if name in shapes
                 and self._input(name).role in ("grad", "data")]
        for p in self.params:
            if p.kind in ("shape", "kernel") or p.name in ("filters",):
                continue
            parts.append(f"{p.name} {params[p.name]}")
        return ", ".join(parts)

    def _input(self, name: str) -> Input:
        for i in self.inputs:
            if i.name == name:
                return i
        raise KeyError(name)


def _text(shape) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def shape_text(shape) -> str:
    """A shape as ``(2, 3)`` (``(5,)`` for one dimension)."""
    return _text(shape)
