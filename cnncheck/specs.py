"""What to run: layer specifications, implementations and sample inputs.

A :class:`LayerSpec` describes one kind of layer independently of any
implementation: which parameters it takes, their defaults, how to build its
inputs from a seeded generator, which arrays it has gradients for and how
much arithmetic and memory traffic one pass costs.  An :class:`Impl` is one
(forward, backward) pair for a layer, called with the course notebook's conventions::

    out, cache = forward(*arrays, layer_param)   # layer_param only for conv/pool
    grads = backward(dout, cache)                # tuple (dx, dw, db) or a bare dx

Specs are data: the engines (``gradcheck``, ``bench``) receive a spec and an
impl as arguments and never look names up themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

#: Parameter names a layer may take, with the help text the CLI shows.
PARAMETERS: dict[str, str] = {
    "shape": "input shape x, comma separated (N,C,H,W for conv/pool/relu; N,D for affine)",
    "filters": "number of filters F (conv) or output features M (affine)",
    "kernel": "filter size HH,WW (or K for a square kernel)",
    "stride": "stride of the convolution or pooling window",
    "pad": "zero padding on every side (conv)",
    "pool_height": "pooling window height",
    "pool_width": "pooling window width",
}

#: The dimension letters ``--sweep`` accepts and what each one changes.
DIMENSIONS: dict[str, str] = {
    "N": "batch size",
    "C": "input channels",
    "H": "input height",
    "W": "input width",
    "D": "affine input features",
    "F": "filters (conv) or output features (affine)",
    "K": "square kernel or pooling window size",
}


@dataclass(frozen=True)
class SampleInput:
    """Concrete inputs for one pass of a layer.

    Attributes
    ----------
    arrays : dict of str to ndarray
        The differentiable inputs in gradient order, e.g. ``{"x": ..., "w": ..., "b": ...}``.
    layer_param : dict or None
        ``conv_param`` / ``pool_param`` as the course notebook passes it, or None.
    dout : ndarray
        An upstream gradient of the output's shape, drawn from the same generator.
    """

    arrays: dict
    layer_param: dict | None
    dout: np.ndarray

    def args(self) -> tuple:
        """Positional arguments for a course-style forward function."""
        if self.layer_param is None:
            return tuple(self.arrays.values())
        return (*self.arrays.values(), dict(self.layer_param))


@dataclass(frozen=True)
class Impl:
    """One implementation of a layer: a (forward, backward) pair.

    Attributes
    ----------
    layer : str
        Registry name of the layer, e.g. ``"conv"``.
    name : str
        Name users select with ``--impl``, e.g. ``"naive"``, ``"fast"``.
    forward, backward : callable
        Seed-style functions (see the module docstring).
    backend : str
        What does the work, for reports: ``"python loops"``, ``"cython"``, ``"numpy"``, ``"torch"``, ``"user"``.
    source : str
        Where it came from: ``"builtin"``, a module path, or an entry point.
    """

    layer: str
    name: str
    forward: Callable
    backward: Callable
    backend: str = ""
    source: str = "builtin"


@dataclass(frozen=True)
class LayerSpec:
    """Everything cnncheck knows about one layer, independent of implementations.

    Attributes
    ----------
    name : str
        Registry key as users type it (``affine``, ``relu``, ``conv``, ``pool``).
    title : str
        Human-readable name for tables.
    grads : tuple of str
        Names of the inputs with gradients, in the order backward returns them.
    params : tuple of str
        Which keys of :data:`PARAMETERS` this layer takes.
    gradcheck_defaults, bench_defaults : mapping
        Default parameters for checking (the course notebook's checks) and for timing (the course notebook's Task 4).
    resolve_fn : callable(params) -> dict
        Validates a full parameter dict and returns it normalised; raises ``CnnCheckError``.
    inputs_fn : callable(params, rng, dtype, margin) -> SampleInput
        Draws inputs; ``margin`` keeps them that far from nondifferentiable points.
    output_shape_fn : callable(params) -> tuple
    flops_fn : callable(params) -> (forward, backward) floating-point operations, or None
    bytes_fn : callable(params, itemsize) -> (forward, backward) bytes moved at least, or None
    seed_functions : mapping of impl name to (forward name, backward name)
        The function names a user's ``layers.py`` uses for this layer.
    has_kinks : bool
        True when the layer is not differentiable everywhere (relu, max pool).
    """

    name: str
    title: str
    grads: tuple
    params: tuple
    gradcheck_defaults: Mapping[str, Any]
    bench_defaults: Mapping[str, Any]
    resolve_fn: Callable
    inputs_fn: Callable
    output_shape_fn: Callable
    flops_fn: Callable | None = None
    bytes_fn: Callable | None = None
    seed_functions: Mapping[str, tuple] = field(default_factory=dict)
    has_kinks: bool = False

    def resolve(self, overrides: Mapping[str, Any] | None = None, *, purpose: str = "gradcheck") -> dict:
        """Merge ``overrides`` into the defaults for ``purpose`` and validate.

        Parameters
        ----------
        overrides : mapping, optional
            Parameter values; keys this layer does not take are ignored, None values too.
        purpose : {"gradcheck", "bench"}

        Returns
        -------
        dict
            A complete, validated parameter set (tuples, ints).
        """
        if purpose not in ("gradcheck", "bench"):
            raise ValueError(f"purpose must be 'gradcheck' or 'bench', got {purpose!r}")
        base = self.gradcheck_defaults if purpose == "gradcheck" else self.bench_defaults
        params = dict(base)
        for key, value in (overrides or {}).items():
            if key in self.params and value is not None:
                params[key] = value
        return self.resolve_fn(params)

    def make_inputs(self, params: Mapping[str, Any], rng: np.random.Generator,
                    dtype=np.float64, margin: float = 0.0) -> SampleInput:
        """Draw a :class:`SampleInput` for resolved ``params`` (see ``resolve``)."""
        return self.inputs_fn(params, rng, np.dtype(dtype), float(margin))

    def output_shape(self, params: Mapping[str, Any]) -> tuple:
        """Shape of the forward output for resolved ``params``."""
        return tuple(self.output_shape_fn(params))

    def flops(self, params: Mapping[str, Any]):
        """(forward, backward) floating-point operation counts, or None."""
        return None if self.flops_fn is None else self.flops_fn(params)

    def bytes_moved(self, params: Mapping[str, Any], itemsize: int):
        """(forward, backward) minimum bytes read plus written, or None."""
        return None if self.bytes_fn is None else self.bytes_fn(params, itemsize)

    def call_forward(self, impl: Impl, sample: SampleInput):
        """Call ``impl.forward`` with the course notebook's argument convention; returns what it returns."""
        return impl.forward(*sample.args())

    def call_backward(self, impl: Impl, dout, cache):
        """Call ``impl.backward(dout, cache)``; returns what it returns, unnormalised."""
        return impl.backward(dout, cache)
