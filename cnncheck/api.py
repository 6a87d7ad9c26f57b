"""The Python API, and the plan every command follows: load, select, check, report.

::

    import cnncheck
    report = cnncheck.gradcheck("conv", module="cnn/layers.py")
    report.passed        # True when the CLI would exit 0
    report               # a table in a notebook

The command-line interface calls the same functions (:func:`prepare`,
:func:`check`), so a check from Python and from the shell is the same check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from cnncheck import __version__
from cnncheck.errors import CnnCheckError
from cnncheck.gradcheck import GradcheckConfig, run_checks
from cnncheck.loading import Loaded, load
from cnncheck.results import CheckResult, GradcheckReport
from cnncheck.status import Status


class Report(GradcheckReport):
    """A :class:`GradcheckReport` that shows itself: a table in notebooks, with ``print`` and Rich."""

    def __str__(self) -> str:
        from cnncheck.report.gradcheck import render_text

        return render_text(self, "plain")

    def __repr__(self) -> str:
        from cnncheck.report.gradcheck import summary_line

        return f"<Report {summary_line(self)}>"

    def __rich__(self):
        from cnncheck.report.gradcheck import rich_renderable

        return rich_renderable(self)

    def _repr_html_(self) -> str:
        from cnncheck.report.gradcheck import render_html

        return render_html(self)


@dataclass
class Plan:
    """What a run will check: the loaded registry, the (spec, impl) pairs, and the parameters given.

    ``failed`` holds results for user modules that did not load in a way
    that is the module's fault to report (it imported cnncheck, ...).
    """

    loaded: Loaded
    pairs: list
    overrides: dict = field(default_factory=dict)
    failed: list = field(default_factory=list)
    quick: bool = False
    absent: tuple = ()

    def close(self) -> None:
        self.loaded.close()


def _as_names(value) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [p.strip() for p in value.split(",")]
    return [str(v) for v in value]


def prepare(layers=("all",), impls=(), modules=(), overrides: Mapping | None = None, *, isolate: bool | None = None,
            sandbox=None, entry_points: bool = True, quick: bool = False, load_errors: str = "raise") -> Plan:
    """Load implementations and choose what to check.

    Parameters
    ----------
    layers, impls : names
        As ``cnncheck gradcheck`` takes them.
    modules : paths or dotted names
        User modules.
    overrides : mapping
        Layer parameters given (``stride``, ``shape``...); values are
        strings or Python values, checked by the specs.
    isolate : bool or None
        Run user modules in child processes; None: yes.
    sandbox : Sandbox, optional
    entry_points : bool
    quick : bool
        Check only the first (the course notebook's) geometry.
    load_errors : {"raise", "report"}
        A module that does not import: a usage error, or results with its status.

    Raises
    ------
    CnnCheckError
        Unknown names, parameters that do not apply or are invalid, a module
        that does not load (with ``load_errors="raise"``).
    """
    overrides = {k: v for k, v in dict(overrides or {}).items() if v is not None}
    modules = [str(m) for m in modules]
    loaded = load(modules, entry_points=entry_points, isolate=True if isolate is None else isolate, sandbox=sandbox)
    try:
        registry = loaded.registry
        failed_sources = {f.source for f in loaded.failures}
        hard = [f for f in loaded.failures if f.status in (Status.ERROR, Status.CRASHED, Status.TIMEOUT,
                                                             Status.INTERNAL_ERROR)]
        if hard and load_errors == "raise":
            raise CnnCheckError(hard[0].message)
        specs = registry.expand_layers(_as_names(layers) or ["all"])
        check_overrides_apply(overrides, specs, registry.layers())
        for spec in specs:
            spec.resolve(overrides)           # validates the values, one message per problem
        sources = [s for s in loaded.user_sources if s not in failed_sources]
        wanted = _as_names(impls)
        pairs = registry.select([s.name for s in specs], wanted, sources=sources) \
            if sources or not loaded.user_sources or wanted else []
        absent = []
        if sources and not wanted and "all" in (_as_names(layers) or ["all"]):
            # Layers a module defines nothing of are left out of "all" (named, they are checked).
            absent = sorted({spec.name for spec, impl in pairs if impl.backend == "missing"},
                            key=[s.name for s in specs].index)
            pairs = [(spec, impl) for spec, impl in pairs if spec.name not in absent]
            if not pairs:
                raise CnnCheckError(f"{', '.join(sources)} defines none of the layer functions cnncheck checks "
                                    "(see `cnncheck list`)")
        failed = []
        for failure in loaded.failures:
            for spec in specs:
                failed.append(CheckResult(spec.name, _module_name(failure.source), "integrity", "out",
                                          failure.status, message=failure.message, source=failure.source))
        return Plan(loaded, pairs, overrides, failed, quick, tuple(absent))
    except BaseException:
        loaded.close()
        raise


def _module_name(source: str) -> str:
    from cnncheck.loading import _stem

    return _stem(source)


def check_overrides_apply(overrides: Mapping, specs, all_specs) -> None:
    """Refuse a parameter that none of the selected layers takes."""
    for key in overrides:
        if not any(key in spec.param_names for spec in specs):
            takers = [s.name for s in all_specs if key in s.param_names]
            raise CnnCheckError(f"--{key.replace('_', '-')} does not apply to {', '.join(s.name for s in specs)} "
                                f"(it applies to {', '.join(takers) or 'no layer'})")


def check(plan: Plan, config: GradcheckConfig, *, on_result: Callable | None = None,
          keep_on_interrupt: bool = False, allow_missing: bool = False, strict: bool = False) -> Report:
    """Run a plan; with ``keep_on_interrupt`` a Ctrl-C returns what finished, marked interrupted."""
    results: list = list(plan.failed)
    interrupted = False

    def collect(batch):
        results.extend(batch)
        if on_result is not None:
            on_result(batch)

    try:
        run_checks(plan.loaded, plan.pairs, overrides=plan.overrides or None, config=config, on_result=collect,
                   quick=plan.quick)
    except KeyboardInterrupt:
        if not keep_on_interrupt:
            raise
        interrupted = True
    return Report(results=tuple(results), config=config.to_dict(), allow_missing=allow_missing, strict=strict,
                  interrupted=interrupted, version=__version__, absent=plan.absent)


def gradcheck(layer="all", impl=None, *, module=None, mode: str = "auto", dtype: str = "float64", seed: int = 0,
              eps: float | None = None, max_error: float | None = None, samples: int = 50, probes: int = 10,
              reference: bool = True, quick: bool = False, allow_missing: bool = False, strict: bool = False,
              isolate: bool | None = None, entry_points: bool = True, **params) -> Report:
    """Check layers from Python; what ``cnncheck gradcheck`` runs.

    Parameters
    ----------
    layer : str or sequence of str
        ``"conv"``, ``["conv", "pool"]``, ``"conv,pool"`` or ``"all"``.
    impl : str or sequence of str, optional
        Implementation names (default: every one, or only the module's).
    module : str, path, or a sequence of them, optional
        User layer modules (run in a child process unless ``isolate=False``).
    mode, dtype, seed, eps, max_error, samples, probes, reference
        As in :class:`~cnncheck.gradcheck.GradcheckConfig`.
    quick : bool
        Check the course notebook's geometry only.
    allow_missing, strict : bool
        ``not-implemented`` does not fail; warnings fail.
    **params
        Layer parameters (``shape=(8, 3, 16, 16)``, ``kernel=5``...): the
        battery is then that one geometry.

    Returns
    -------
    Report
        ``report.passed``; iterating gives :class:`~cnncheck.results.CheckResult` objects.

    Raises
    ------
    CnnCheckError
        Unknown layer, implementation or parameter, bad values, a module that does not import.
    """
    from cnncheck import catalog

    known = {p.name for spec in catalog.specs() for p in spec.params}
    unknown = sorted(set(params) - known)
    if unknown:
        raise CnnCheckError(f"unknown parameter {unknown[0]!r}; known: {', '.join(sorted(known))}")
    config = GradcheckConfig(mode=mode, samples=samples, probes=probes, eps=eps, max_error=max_error, dtype=dtype,
                             seed=seed, reference=reference)
    modules = [] if module is None else (list(module) if isinstance(module, (list, tuple)) else [module])
    plan = prepare(_as_names(layer) or ["all"], _as_names(impl), modules, params, isolate=isolate,
                   entry_points=entry_points, quick=quick)
    try:
        return check(plan, config, allow_missing=allow_missing, strict=strict)
    finally:
        plan.close()


#: The built-in models ``cnncheck gradcheck model`` checks without ``--model``: (label, class, arguments).
BUILTIN_MODELS = (
    ("ThreeLayerConvNet", "ThreeLayerConvNet", {}),
    ("FullyConnectedNet", "FullyConnectedNet", {}),
    ("FullyConnectedNet[batchnorm,dropout]", "FullyConnectedNet",
     {"normalization": "batchnorm", "dropout_keep_ratio": 0.7}),
    ("FullyConnectedNet[layernorm]", "FullyConnectedNet", {"normalization": "layernorm"}),
)


def check_models(models=(), model_args: Mapping | None = None, *, config: GradcheckConfig | None = None,
                 isolate: bool | None = None, sandbox=None, on_result: Callable | None = None) -> Report:
    """Check whole models: ``models`` as ``"path/to/cnn.py:Class"`` strings, or cnncheck's own when empty.

    ``model_args`` are constructor arguments for every model given.

    Raises
    ------
    CnnCheckError
        A malformed ``--model``, a module that does not load, a class it lacks.
    """
    from cnncheck import modelcheck
    from cnncheck.layers import models as builtin
    from cnncheck.session import ChildSession, LocalSession

    config = config or GradcheckConfig()
    results: list = []
    if not models:
        session = LocalSession({name: getattr(builtin, name) for name in ("ThreeLayerConvNet", "FullyConnectedNet")})
        for label, name, kwargs in BUILTIN_MODELS:
            batch = modelcheck.check_model(session, name, {**kwargs, **dict(model_args or {})}, config=config,
                                           label=label)
            results.extend(batch)
            if on_result is not None:
                on_result(batch)
        return Report(results=tuple(results), config=config.to_dict(), version=__version__)
    for text in models:
        module, name = modelcheck.parse_model(text)
        session = ChildSession(sandbox) if isolate in (None, True) else LocalSession()
        try:
            session.begin()
            response = session.request({"op": "load", "module": module, "names": [name]})
            if not response.get("loaded"):
                raise CnnCheckError(str(response.get("message")))
            if name not in (response.get("functions") or {}):
                raise CnnCheckError(f"{module} defines no class {name}")
            reference = getattr(builtin, name, None) if name in ("ThreeLayerConvNet", "FullyConnectedNet") else None
            batch = modelcheck.check_model(session, name, dict(model_args or {}), config=config, source=module,
                                           reference=reference)
        finally:
            session.close()
        results.extend(batch)
        if on_result is not None:
            on_result(batch)
    return Report(results=tuple(results), config=config.to_dict(), version=__version__)
