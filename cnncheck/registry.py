"""Registry of layers and their implementations, looked up by the names users type."""

from __future__ import annotations

import difflib
from typing import Iterable

from cnncheck.errors import CnnCheckError, UnknownNameError
from cnncheck.specs import Impl, LayerSpec


class Registry:
    """Maps layer names to :class:`LayerSpec` and (layer, impl) to :class:`Impl`.

    Layers and implementations keep the order they were added in; that order
    is the order of tables and of ``all``.
    """

    def __init__(self) -> None:
        self._layers: dict[str, LayerSpec] = {}
        self._impls: dict[str, dict[str, Impl]] = {}

    # -- building -----------------------------------------------------------
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
            raise CnnCheckError(
                f"implementation {impl.name!r} of layer {impl.layer!r} is already registered "
                f"(from {impls[impl.name].source})"
            )
        impls[impl.name] = impl

    # -- lookup -------------------------------------------------------------
    def layer_names(self) -> list[str]:
        """Registered layer names, in registration order."""
        return list(self._layers)

    def layers(self) -> list[LayerSpec]:
        """Registered layer specs, in registration order."""
        return list(self._layers.values())

    def layer(self, name: str) -> LayerSpec:
        """The spec called ``name``; an unknown name raises with the known ones and a suggestion."""
        try:
            return self._layers[name]
        except KeyError:
            raise _unknown("layer", name, self._layers) from None

    def impls(self, layer: str) -> list[Impl]:
        """Implementations of ``layer``, in registration order."""
        self.layer(layer)
        return list(self._impls[layer].values())

    def impl(self, layer: str, name: str) -> Impl:
        """The implementation ``name`` of ``layer``."""
        self.layer(layer)
        try:
            return self._impls[layer][name]
        except KeyError:
            raise _unknown(f"implementation of {layer!r}", name, self._impls[layer]) from None

    def all_impl_names(self) -> list[str]:
        """Every implementation name registered for any layer, without repeats."""
        names: dict[str, None] = {}
        for impls in self._impls.values():
            names.update(dict.fromkeys(impls))
        return list(names)

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

    def select(self, layers: Iterable[str], impls: Iterable[str] | None = None) -> list[tuple[LayerSpec, Impl]]:
        """Pairs (spec, impl) to run for the given layer and implementation names.

        With ``impls`` empty or None every implementation of each layer is chosen.
        Otherwise each layer gets the named implementations it has; a name no
        selected layer has is an error, so a typo never silently runs nothing.
        """
        specs = self.expand_layers(layers)
        wanted = list(dict.fromkeys(impls or ()))
        pairs: list[tuple[LayerSpec, Impl]] = []
        used: set[str] = set()
        for spec in specs:
            available = self._impls[spec.name]
            if not wanted:
                pairs.extend((spec, impl) for impl in available.values())
                continue
            for name in wanted:
                if name in available:
                    pairs.append((spec, available[name]))
                    used.add(name)
        missing = [name for name in wanted if name not in used]
        if missing:
            known = sorted({n for s in specs for n in self._impls[s.name]})
            layer_list = ", ".join(s.name for s in specs)
            raise _unknown(f"implementation for {layer_list}", missing[0], known)
        return pairs


def _unknown(kind: str, name: str, known) -> UnknownNameError:
    """An UnknownNameError whose message adds a close match when there is one."""
    err = UnknownNameError(kind, name, known)
    close = difflib.get_close_matches(name, list(known), n=1)
    if close:
        err.args = (f"{err.args[0]} (did you mean {close[0]!r}?)",)
    return err
