"""Rubrics: points per layer (and per check), and the score of a submission's results.

A rubric is a TOML file::

    partial = "parts"            # the default rule of every item (optional)

    [layers]
    affine = 2                   # 2 points, all or nothing
    relu = 1

    [layers.conv]
    points = 6
    checks = { gradient = 3, reference = 2, protocol = 1 }

    [layers.pool]
    points = 4
    geometries = { notebook = 3, overlap = 1 }
    partial = "geometries"

    [layers.conv-fast]           # the conv_forward_fast/conv_backward_fast pair
    points = 1

Each **item** is a layer's implementation under the course's names
(``conv``), or another set of names the layer knows (``conv-fast``).  Its
points are split among its **parts** in proportion to their weights:
``checks`` (kinds of check: ``call``, ``forward``, ``reference``,
``gradient``, ``subgradient``, ``protocol``) and ``geometries`` (the labels
of the layer's battery); without parts the item is one part, every check.

A part is checked at geometries: a kind at every geometry of the battery
(``protocol`` at the first one only, where it runs), a geometry at itself.
It passes at a geometry when that geometry was checked and no failing
result there, nor any failing result of the whole implementation, is of
its kind or a prerequisite (``integrity``, ``call`` and ``forward``: what
stops the other checks from meaning anything).  The partial-credit rule
then gives:

``none``
    every point when every part passes at every geometry, else none;
``parts`` (the default)
    each part's share when it passes at every one of its geometries;
``geometries``
    each part's share times the fraction of its geometries where it passes.

A submission that cheats (a status in :data:`cnncheck.status.CHEATING` in
any result) scores 0 on every item unless ``cheating = "item"``, which
costs only the items where it was seen.  Without a file, every layer
graded is worth one point, all or nothing.

This module parses, validates and scores; it prints nothing.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

from cnncheck.errors import CnnCheckError
from cnncheck.status import CHEATING, Status, severity

#: Partial-credit rules.
RULES = ("none", "parts", "geometries")

#: Kinds of check a rubric may give points to.
CHECK_KINDS = ("call", "forward", "reference", "gradient", "subgradient", "protocol")

#: Kinds whose failures fail every part: without them the other checks mean nothing.
PREREQUISITES = ("integrity", "call", "forward")

#: Policies for a submission that cheats.
CHEATING_RULES = ("zero", "item")

#: Digits points are rounded to.
DIGITS = 4

_TOP_KEYS = ("partial", "cheating", "layers")
_ITEM_KEYS = ("points", "checks", "geometries", "partial", "title")


@dataclass(frozen=True)
class Part:
    """A share of an item: a kind of check (``kind="check"``), a geometry, or every check (``all``)."""

    name: str
    kind: str
    weight: float = 1.0

    @property
    def label(self) -> str:
        return {"check": self.name, "geometry": f"geometry {self.name}"}.get(self.kind, "every check")

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "weight": self.weight}


@dataclass(frozen=True)
class Item:
    """Points for one implementation of one layer.

    Attributes
    ----------
    layer : str
    variant : str
        "" for the course's names of the layer, else the suffix of another
        set of names it knows (``fast``).
    points : float
    parts : tuple of Part
        Empty: one part, every check.
    partial : str
        One of :data:`RULES`.
    title : str
        Shown instead of the name when given.
    functions : tuple of str
        The forward and backward names (filled in by :meth:`Rubric.resolve`).
    """

    layer: str
    variant: str = ""
    points: float = 1.0
    parts: tuple = ()
    partial: str = "parts"
    title: str = ""
    functions: tuple = ()

    @property
    def name(self) -> str:
        return self.layer if not self.variant else f"{self.layer}-{self.variant}"

    @property
    def label(self) -> str:
        return self.title or self.name

    def shares(self) -> tuple:
        """``(Part, points)`` pairs: the item's points split by weight."""
        parts = self.parts or (Part("all", "all"),)
        total = sum(p.weight for p in parts)
        return tuple((p, self.points * p.weight / total) for p in parts)

    def to_dict(self) -> dict:
        return {"name": self.name, "layer": self.layer, "variant": self.variant, "points": self.points,
                "partial": self.partial, "parts": [p.to_dict() for p in self.parts], "title": self.title}


@dataclass(frozen=True)
class Rubric:
    """Items with points; ``source`` is the file it came from ("" for the default)."""

    items: tuple
    cheating: str = "zero"
    source: str = ""

    @property
    def max_points(self) -> float:
        return round(sum(i.points for i in self.items), DIGITS)

    @property
    def layers(self) -> list:
        """Layers with points, in rubric order."""
        return list(dict.fromkeys(i.layer for i in self.items))

    def item(self, name: str) -> Item:
        return next(i for i in self.items if i.name == name)

    def to_dict(self) -> dict:
        return {"source": self.source, "cheating": self.cheating, "max_points": self.max_points,
                "items": [i.to_dict() for i in self.items]}

    @property
    def digest(self) -> str:
        """A hash of what the rubric gives points for (not of its file's bytes)."""
        data = {k: v for k, v in self.to_dict().items() if k != "source"}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def resolve(self, specs: Mapping, *, battery: Mapping, reference: bool = True, protocol: bool = True,
                has_reference: Mapping | None = None) -> Rubric:
        """Check every name against the layers; fill in the function names.

        Parameters
        ----------
        specs : mapping of str to LayerSpec
            The layers that exist.
        battery : mapping of str to sequence of str
            The geometry labels that will be checked, per layer graded.
        reference, protocol : bool
            Whether reference and protocol checks run.
        has_reference : mapping of str to bool, optional
            Whether each layer has a reference implementation (default: it names one).

        Raises
        ------
        CnnCheckError
            A layer, set of names, kind of check or geometry that does not
            exist or will not be checked; one line naming the rubric entry.
        """
        self.check_names(specs)
        resolved = []
        for item in self.items:
            where = self._where(item)
            spec = specs[item.layer]
            if item.layer not in battery:
                raise CnnCheckError(f"{where}: {item.layer} is not among the layers checked "
                                    f"({', '.join(battery)}); check it too, or drop it from the rubric")
            labels = list(battery[item.layer])
            for part in item.parts:
                if part.kind == "geometry":
                    if part.name not in labels:
                        known = [g.label for g in spec.geometries]
                        if part.name in known:
                            raise CnnCheckError(f"{where}: geometry {part.name!r} is not checked in this run "
                                                f"(only {', '.join(labels)}: --quick or layer options); "
                                                "drop it from the rubric or check the whole battery")
                        raise CnnCheckError(f"{where}: {item.layer} has no geometry {part.name!r}"
                                            f"{_close(part.name, known)}; known: {', '.join(known)}")
                    continue
                if part.name == "subgradient" and spec.subgradient is None:
                    raise CnnCheckError(f"{where}: {item.layer} has no subgradient checks (only layers with kinks "
                                        f"have them: {', '.join(n for n, s in specs.items() if s.subgradient)})")
                if part.name == "reference":
                    exists = has_reference[item.layer] if has_reference is not None else bool(spec.reference)
                    if not exists:
                        raise CnnCheckError(f"{where}: {item.layer} has no reference implementation to compare with")
                    if not reference:
                        raise CnnCheckError(f"{where}: gives points for reference checks, which --no-reference "
                                            "leaves out")
                if part.name == "protocol" and not protocol:
                    raise CnnCheckError(f"{where}: gives points for protocol checks, which this run leaves out")
            resolved.append(replace(item, functions=tuple(n for n in spec.functions[item.variant] if n)))
        return replace(self, items=tuple(resolved))

    def check_names(self, specs: Mapping) -> None:
        """Refuse a layer, or a set of a layer's names, that does not exist (CnnCheckError, one line)."""
        for item in self.items:
            where = self._where(item)
            if item.layer not in specs:
                raise CnnCheckError(f"{where}: no layer {item.layer!r}{_close(item.layer, specs)}; "
                                    f"known: {', '.join(specs)}")
            spec = specs[item.layer]
            if item.variant not in spec.functions:
                known = ", ".join(f"{item.layer}-{v}" if v else item.layer for v in spec.functions)
                raise CnnCheckError(f"{where}: {item.layer} has no implementation {item.name!r}; known: {known}")

    def _where(self, item: Item) -> str:
        return f"{self.source or 'rubric'}: [layers.{item.name}]"


def _close(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# -- reading ---------------------------------------------------------------------------------------
def default_rubric(layers: Sequence[str]) -> Rubric:
    """One point per layer, all or nothing, for the implementation under the course's names."""
    return Rubric(tuple(Item(layer) for layer in layers))


def load_rubric(path) -> Rubric:
    """Read a rubric file.

    Raises
    ------
    CnnCheckError
        The file is missing, not TOML, or not a rubric (unknown keys, bad
        values); the message names the file and the entry.  Names are
        checked against the layers later, by :meth:`Rubric.resolve`.
    """
    try:
        import tomllib
    except ModuleNotFoundError:   # Python 3.10
        import tomli as tomllib

    source = str(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise CnnCheckError(f"{source}: no such rubric file") from None
    except IsADirectoryError:
        raise CnnCheckError(f"{source}: is a folder; give a rubric file (TOML)") from None
    except tomllib.TOMLDecodeError as exc:
        raise CnnCheckError(f"{source}: not valid TOML ({exc})") from None
    return parse_rubric(data, source)


def parse_rubric(data: Mapping, source: str = "rubric") -> Rubric:
    """A rubric from the parsed TOML ``data`` (see the module docstring)."""
    unknown = [k for k in data if k not in _TOP_KEYS]
    if unknown:
        raise CnnCheckError(f"{source}: unknown key {unknown[0]!r}{_close(unknown[0], _TOP_KEYS)}; "
                            f"a rubric has {', '.join(_TOP_KEYS)}")
    partial = _choice(data.get("partial", "parts"), RULES, f"{source}: partial")
    cheating = _choice(data.get("cheating", "zero"), CHEATING_RULES, f"{source}: cheating")
    layers = data.get("layers")
    if not isinstance(layers, Mapping) or not layers:
        raise CnnCheckError(f"{source}: gives no points; add a [layers] table, such as [layers.conv] points = 2")
    items = []
    for name, entry in layers.items():
        where = f"{source}: [layers.{name}]"
        layer, _, variant = str(name).partition("-")
        if isinstance(entry, Mapping):
            unknown = [k for k in entry if k not in _ITEM_KEYS]
            if unknown:
                raise CnnCheckError(f"{where}: unknown key {unknown[0]!r}{_close(unknown[0], _ITEM_KEYS)}; "
                                    f"an entry has {', '.join(_ITEM_KEYS)}")
            if "points" not in entry:
                raise CnnCheckError(f"{where}: says nothing about points; add points = 1")
            points = _number(entry["points"], f"{where} points", zero=True)
            parts = _parts(entry.get("checks", {}), "check", f"{where} checks", CHECK_KINDS)
            parts += _parts(entry.get("geometries", {}), "geometry", f"{where} geometries", None)
            rule = _choice(entry.get("partial", partial), RULES, f"{where} partial")
            title = entry.get("title", "")
            if not isinstance(title, str):
                raise CnnCheckError(f"{where} title: expected a string, got {title!r}")
        else:
            points, parts, rule, title = _number(entry, where, zero=True), (), partial, ""
        items.append(Item(layer, variant, points, parts, rule, title))
    if not any(i.points for i in items):
        raise CnnCheckError(f"{source}: every entry is worth 0 points")
    return Rubric(tuple(items), cheating, source)


def _number(value, where: str, *, zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not zero):
        least = "a number >= 0" if zero else "a number > 0"
        raise CnnCheckError(f"{where}: expected {least}, got {value!r}")
    return float(value)


def _choice(value, choices, where: str) -> str:
    if value not in choices:
        raise CnnCheckError(f"{where}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def _parts(table, kind: str, where: str, known) -> tuple:
    if not isinstance(table, Mapping):
        raise CnnCheckError(f"{where}: expected a table of weights, such as {{ gradient = 2, reference = 1 }}")
    parts = []
    for name, weight in table.items():
        if known is not None and name not in known:
            hint = (" (integrity checks are a prerequisite of every part, not a part)" if name == "integrity"
                    else _close(name, known))
            raise CnnCheckError(f"{where}: no kind of check {name!r}{hint}; known: {', '.join(known)}")
        parts.append(Part(str(name), kind, _number(weight, f"{where} {name}")))
    return tuple(parts)


# -- scoring ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PartScore:
    """How one part of an item did.

    Attributes
    ----------
    part : Part
    points, max_points : float
    passed, checked : int
        Geometries where the part passed, out of those it is checked at.
    failing : CheckResult or None
        The first result that failed it.
    """

    part: Part
    points: float
    max_points: float
    passed: int
    checked: int
    failing: object = None

    def to_dict(self) -> dict:
        return {"part": self.part.label, "points": self.points, "max_points": self.max_points,
                "geometries_passed": self.passed, "geometries": self.checked,
                "failing": None if self.failing is None else _brief(self.failing)}


@dataclass(frozen=True)
class ItemScore:
    """How one item did.

    Attributes
    ----------
    item : Item
    impl : str
        The implementation scored ("" when the submission has none for it).
    points : float
    status : str
        ``pass``, or the worst status among its failing results (or the
        submission's status when it did not load or cheated).
    parts : tuple of PartScore
    failing : CheckResult or None
        The first failing result, in battery order.
    reason : str
        Why it scored 0 regardless of its own checks ("" otherwise).
    """

    item: Item
    impl: str
    points: float
    status: str
    parts: tuple = ()
    failing: object = None
    reason: str = ""

    @property
    def max_points(self) -> float:
        return self.item.points

    @property
    def full(self) -> bool:
        return self.points >= self.item.points and self.status == str(Status.PASS)

    def to_dict(self) -> dict:
        return {"item": self.item.name, "title": self.item.label, "layer": self.item.layer, "impl": self.impl,
                "points": self.points, "max_points": self.max_points, "status": self.status,
                "reason": self.reason, "parts": [p.to_dict() for p in self.parts],
                "failing": None if self.failing is None else _brief(self.failing)}


@dataclass(frozen=True)
class ScoreSheet:
    """The score of one submission: one :class:`ItemScore` per rubric item."""

    items: tuple = ()
    rubric: Rubric = field(default_factory=lambda: Rubric(()))

    @property
    def points(self) -> float:
        return round(sum(i.points for i in self.items), DIGITS)

    @property
    def max_points(self) -> float:
        return self.rubric.max_points

    def __getitem__(self, name: str) -> ItemScore:
        return next(i for i in self.items if i.item.name == name)

    def to_dict(self) -> dict:
        return {"points": self.points, "max_points": self.max_points, "rubric": self.rubric.digest,
                "items": [i.to_dict() for i in self.items]}


def _brief(result) -> dict:
    return {"subject": result.subject, "kind": result.kind, "finding": result.finding, "status": str(result.status),
            "geometry": result.geometry, "message": result.message}


def score(rubric: Rubric, results: Sequence, *, impls: Mapping, battery: Mapping, failure: tuple | None = None,
          strict: bool = False) -> ScoreSheet:
    """Score one submission's results against a resolved rubric.

    Parameters
    ----------
    rubric : Rubric
    results : sequence of CheckResult
        Every result of the submission, in the order they were checked.
    impls : mapping of str to str
        The implementation name of each item the submission has (``{"conv": "layers"}``).
    battery : mapping of str to sequence of str
        The geometry labels checked per layer, in order.
    failure : (status, message), optional
        The submission did not load: every item scores 0 with this status.
    strict : bool
        Warnings fail.
    """
    items = []
    cheat = next((r for r in results if Status(r.status) in CHEATING), None) if failure is None else None
    for item in rubric.items:
        if failure is not None:
            items.append(ItemScore(item, "", 0.0, str(failure[0]), reason=f"did not load: {failure[1]}"))
            continue
        impl = impls.get(item.name, "")
        mine = [r for r in results if r.layer == item.layer and r.impl == impl] if impl else []
        if not mine:
            names = " and ".join(item.functions) or item.name
            items.append(ItemScore(item, impl, 0.0, str(Status.NOT_IMPLEMENTED),
                                   reason=f"the submission does not define {names}"))
            continue
        scored = _score_item(item, impl, mine, list(battery.get(item.layer, ())), strict)
        if cheat is not None and (rubric.cheating == "zero" or any(Status(r.status) in CHEATING for r in mine)):
            zeroed = tuple(replace(p, points=0.0) for p in scored.parts)
            reason = "" if cheat in mine else \
                f"the submission is not graded: {cheat.layer}/{cheat.impl}: {cheat.status}: {cheat.message}"
            scored = replace(scored, points=0.0, parts=zeroed, reason=reason,
                             status=scored.status if cheat in mine else str(cheat.status))
        items.append(scored)
    return ScoreSheet(tuple(items), rubric)


def _score_item(item: Item, impl: str, mine: list, geometries: list, strict: bool) -> ItemScore:
    failing = [r for r in mine if r.fails(strict=strict)]
    ran = {r.geometry for r in mine if r.geometry}
    whole = [r for r in failing if not r.geometry]
    parts = []
    for part, share in item.shares():
        if part.kind == "geometry":
            at = [part.name]
            relevant = lambda r: True  # noqa: E731
        elif part.kind == "check":
            at = geometries[:1] if part.name == "protocol" else geometries
            kinds = {part.name, *PREREQUISITES}
            relevant = lambda r, kinds=kinds: r.kind in kinds  # noqa: E731
        else:
            at = geometries
            relevant = lambda r: True  # noqa: E731
        blocking = [r for r in whole if relevant(r)]
        passed = 0
        first = blocking[0] if blocking else None
        for label in at:
            here = [r for r in failing if r.geometry == label and relevant(r)]
            if first is None and here:
                first = here[0]
            if label in ran and not here and not blocking:
                passed += 1
        if first is None and passed < len(at) and failing:
            first = failing[0]          # a geometry never checked: what stopped the battery
        parts.append(PartScore(part, 0.0, round(share, DIGITS), passed, len(at), first))
    every = all(p.passed == p.checked for p in parts)
    scored = []
    for p, (_, share) in zip(parts, item.shares()):
        if item.partial == "none":
            points = share if every else 0.0
        elif item.partial == "parts":
            points = share if p.passed == p.checked else 0.0
        else:
            points = share * p.passed / p.checked if p.checked else 0.0
        scored.append(replace(p, points=round(points, DIGITS)))
    total = round(sum(p.points for p in scored), DIGITS)
    worst = max(failing, key=lambda r: severity(r.status)) if failing else None
    status = str(worst.status) if worst is not None else str(Status.PASS)
    return ItemScore(item, impl, total, status, tuple(scored), failing[0] if failing else None)
