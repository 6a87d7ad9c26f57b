"""Registry of layers and their implementations, and the rules that select what to run.

Layers and implementations keep the order they were added in; that order
is the order of tables and of ``all``.  :meth:`Registry.select` is the one
place that turns the names a user typed into (spec, implementation) pairs,
for every command.
"""

from __future__ import annotations

import difflib
from typing import Iterable, Sequence

from cnncheck.errors import CnnCheckError, UnknownNameError
from cnncheck.specs import Impl, LayerSpec


class Registry:
    """Maps layer names to :class:`LayerSpec` and (layer, impl) to :class:`Impl`."""

    def __init__(self) -> None:
        self._layers: dict[str, LayerSpec] = {}
        self._impls: dict[str, dict[str, Impl]] = {}
        #: Implementations a spec ships with that cannot run here, by (layer, name): what to install.
        self.unavailable: dict = {}

    # -- building ---------------------------------------------------------------------------
    def add_layer(self, spec: LayerSpec) -> None:
        """Register ``spec``; a layer name can be registered once."""
        if spec.name in self._layers:
            raise CnnCheckError(f"layer {spec.name!r} is already registered")
        self._layers[spec.name] = spec
        self._impls[spec.name] = {}

    def add_impl(self, impl: Impl, *, replace: bool = False) -> None:
        """Register ``impl`` under its layer; refuses a duplicate name unless ``replace``."""
        impls = self._impls.get(impl.layer)
        if impls is None:
            raise UnknownNameError("layer", impl.layer, self._layers)
        if impl.name in impls and not replace:
            raise CnnCheckError(f"implementation {impl.name!r} of layer {impl.layer!r} is already registered "
                                f"(from {impls[impl.name].source})")
        impls[impl.name] = impl

    # -- lookup -----------------------------------------------------------------------------
    def layer_names(self) -> list[str]:
        return list(self._layers)

    def layers(self) -> list[LayerSpec]:
        return list(self._layers.values())

    def layer(self, name: str) -> LayerSpec:
        """The spec called ``name``; an unknown name raises with the known ones and a suggestion."""
        try:
            return self._layers[name]
        except KeyError:
            raise unknown("layer", name, self._layers) from None

    def impls(self, layer: str) -> list[Impl]:
        self.layer(layer)
        return list(self._impls[layer].values())

    def impl(self, layer: str, name: str) -> Impl:
        self.layer(layer)
        try:
            return self._impls[layer][name]
        except KeyError:
            raise self._unknown_impl(name, [layer]) from None

    def reference(self, spec: LayerSpec) -> Impl | None:
        """The implementation ``spec.reference`` names, when registered."""
        return self._impls.get(spec.name, {}).get(spec.reference) if spec.reference else None

    def expand_layers(self, names: Iterable[str]) -> list[LayerSpec]:
        """Resolve user layer names; ``all`` means every layer. Repeats are dropped."""
        names = list(names) or ["all"]
        chosen: dict[str, LayerSpec] = {}
        for name in names:
            if name == "all":
                chosen.update(self._layers)
            else:
                chosen[name] = self.layer(name)
        return list(chosen.values())

    def select(self, layers: Iterable[str], impls: Sequence[str] = (), *,
               sources: Sequence[str] = ()) -> list[tuple[LayerSpec, Impl]]:
        """(spec, impl) pairs to run for the names a user typed.

        Parameters
        ----------
        layers : names
            Layer names or ``all``.
        impls : names
            Implementation names, or ``all``.  Empty: the implementations of
            ``sources`` when given (a user's modules), else every one.
        sources : sequence of str
            ``Impl.source`` values of user modules.

        Raises
        ------
        CnnCheckError
            An unknown layer or implementation name (with the known ones),
            an implementation that needs a missing extra (``pip install ...``).
        """
        specs = self.expand_layers(layers)
        wanted = list(dict.fromkeys(impls))
        if "" in wanted:
            raise CnnCheckError("--impl needs a name; known: " + ", ".join(self._known([s.name for s in specs])))
        pairs: list = []
        if "all" in wanted:
            return [(spec, impl) for spec in specs for impl in self._impls[spec.name].values()]
        if not wanted:
            for spec in specs:
                available = list(self._impls[spec.name].values())
                if sources:
                    mine = [i for i in available if i.source in sources]
                    real = [i for i in mine if not i.missing]
                    available = real if real else mine[:1]
                pairs.extend((spec, impl) for impl in available)
            return pairs
        used: set = set()
        for spec in specs:
            for name in wanted:
                impl = self._impls[spec.name].get(name)
                if impl is not None:
                    pairs.append((spec, impl))
                    used.add(name)
        missing = [name for name in wanted if name not in used]
        if missing:
            raise self._unknown_impl(missing[0], [s.name for s in specs])
        return pairs

    def _known(self, layers: list) -> list:
        return sorted({n for layer in layers for n in self._impls[layer]})

    def _unknown_impl(self, name: str, layers: list) -> CnnCheckError:
        for (layer, impl_name), extra in self.unavailable.items():
            if impl_name == name and layer in layers:
                return CnnCheckError(f"implementation {name!r} needs {extra}")
        return unknown(f"implementation for {', '.join(layers)}", name, self._known(layers))


def unknown(kind: str, name: str, known) -> UnknownNameError:
    """An UnknownNameError whose message adds a close match when there is one."""
    err = UnknownNameError(kind, name, known)
    close = difflib.get_close_matches(name, list(known), n=1)
    if close:
        err.args = (f"{err.args[0]} (did you mean {close[0]!r}?)",)
    return err
