"""Recipes: a TOML file naming the passes to run, in order, with their settings.

The format is documented in ``docs/recipes.md``. Every key is checked before anything runs: an
unknown key or a value out of range is a :class:`~squeezeforge.sim.errors.UserError` naming the
recipe, the step and the key. Shipped recipes live in ``models/recipes/`` (package data) and are
found by name (``fixed8``, ``inq5``, ``deep-compression``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from squeezeforge.sim.errors import UserError

from ..train import Distillation
from .base import LAYER_GROUPS, Finetune
from .filters import FilterPrune
from .fixed import FixedPoint
from .inq import DEFAULT_PORTIONS, INQ
from .lowrank import LowRank
from .prune import MagnitudePrune
from .share import WeightShare

__all__ = [
    "ExportOptions",
    "FinetuneOnly",
    "Recipe",
    "load_recipe",
    "parse_recipe",
    "shipped_recipes",
]


@dataclass(frozen=True)
class FinetuneOnly:
    """A plain fine-tuning step (no change to the model's structure or formats)."""

    kind: ClassVar[str] = "finetune"

    finetune: Finetune = field(default_factory=Finetune)

    def apply(self, model: Any, ctx: Any) -> Any:
        ctx.finetune(model, self.finetune, "fine-tune")
        return model


@dataclass(frozen=True)
class ExportOptions:
    """How linear layers are stored: ``sparse`` is ``"none"`` (all dense, the default), ``"auto"``
    (every linear layer whose density is at most ``sparse_density``) or a list of layer names."""

    sparse: str | tuple[str, ...] = "none"
    sparse_density: float = 0.5


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    seed: int
    steps: tuple[Any, ...]
    export: ExportOptions
    source: dict = field(default_factory=dict)


class _Checker:
    """Reads one table of a recipe, turning every problem into a UserError that says where."""

    def __init__(self, recipe: str, where: str, table: Mapping[str, Any]) -> None:
        self.recipe, self.where, self.table = recipe, where, dict(table)
        self.used: set[str] = set()

    def fail(self, message: str) -> UserError:
        return UserError(f"recipe {self.recipe!r}: {self.where}: {message}")

    def get(self, key: str, default: Any, check: Callable[[Any], Any]) -> Any:
        self.used.add(key)
        if key not in self.table:
            return default
        return check(self.table[key])

    def _number(self, key: str, value: Any, lo: float, hi: float, *, integer: bool) -> Any:
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            kind = "an integer" if integer else "a number"
            raise self.fail(f"{key} must be {kind}, got {value!r}")
        if not lo <= value <= hi:
            raise self.fail(f"{key} = {value!r} is out of range {lo}..{hi}")
        return int(value) if integer else float(value)

    def integer(self, key: str, default: int | None, lo: int, hi: int) -> Any:
        return self.get(key, default, lambda v: self._number(key, v, lo, hi, integer=True))

    def number(self, key: str, default: float | None, lo: float, hi: float) -> Any:
        return self.get(key, default, lambda v: self._number(key, v, lo, hi, integer=False))

    def fraction_or_table(self, key: str, default: Any, lo: float, hi: float) -> Any:
        def check(v: Any) -> Any:
            if isinstance(v, Mapping):
                return {
                    str(n): self._number(f"{key}.{n}", x, lo, hi, integer=False)
                    for n, x in v.items()
                }
            return self._number(key, v, lo, hi, integer=False)

        return self.get(key, default, check)

    def layers(self, default: str) -> Any:
        def check(v: Any) -> Any:
            if isinstance(v, str):
                if v not in LAYER_GROUPS:
                    raise self.fail(
                        f"layers = {v!r}; use one of {', '.join(LAYER_GROUPS)}"
                        " or a list of layer names"
                    )
                return v
            if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
                return tuple(v)
            raise self.fail(f"layers must be a group name or a non-empty list of names, got {v!r}")

        return self.get("layers", default, check)

    def finetune(self) -> Finetune:
        epochs = self.integer("epochs", 0, 0, 1000)
        lr = self.number("lr", 1e-3, 1e-7, 1.0)
        batch_size = self.integer("batch_size", 32, 1, 4096)

        def distill(v: Any) -> Distillation | None:
            if isinstance(v, bool):
                return Distillation() if v else None
            if isinstance(v, Mapping):
                sub = _Checker(self.recipe, f"{self.where}: distill", v)
                d = Distillation(
                    temperature=sub.number("temperature", 4.0, 0.1, 100.0),
                    alpha=sub.number("alpha", 0.5, 0.0, 1.0),
                )
                sub.done()
                return d
            raise self.fail(f"distill must be true, false or a table, got {v!r}")

        return Finetune(
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            label_smoothing=self.number("label_smoothing", 0.0, 0.0, 0.99),
            distillation=self.get("distill", None, distill),
        )

    def done(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.fail(f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(self.used))})")


def _portions(c: _Checker) -> tuple[float, ...]:
    def check(v: Any) -> tuple[float, ...]:
        if not isinstance(v, list) or not v:
            raise c.fail(f"portions must be a non-empty list, got {v!r}")
        out = tuple(c._number("portions", x, 0.0, 1.0, integer=False) for x in v)
        if any(b <= a for a, b in zip(out, out[1:], strict=False)) or out[0] <= 0:
            raise c.fail(f"portions must increase strictly from above 0, got {list(out)}")
        if out[-1] != 1.0:
            raise c.fail(f"portions must end at 1.0 (every weight quantized), got {out[-1]}")
        return out

    return c.get("portions", DEFAULT_PORTIONS, check)


def _rank_or_table(c: _Checker, v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(n): c._number(f"rank.{n}", x, 1, 100_000, integer=True) for n, x in v.items()}
    return c._number("rank", v, 1, 100_000, integer=True)


def _step(c: _Checker, kind: str) -> Any:
    if kind == "prune":
        sparsity = c.fraction_or_table("sparsity", None, 0.0, 0.999)
        global_sparsity = c.number("global_sparsity", None, 0.0, 0.999)
        threshold = c.number("threshold", None, 0.0, 1e6)
        given = [
            k
            for k, v in (
                ("sparsity", sparsity),
                ("global_sparsity", global_sparsity),
                ("threshold", threshold),
            )
            if v is not None
        ]
        if len(given) != 1:
            raise c.fail(
                "give exactly one of sparsity, global_sparsity, threshold"
                f" (got {', '.join(given) or 'none'})"
            )
        return MagnitudePrune(
            sparsity=sparsity,
            global_sparsity=global_sparsity,
            threshold=threshold,
            layers=c.layers("all"),
            iterations=c.integer("iterations", 1, 1, 100),
            finetune=c.finetune(),
        )
    if kind == "filter-prune":
        return FilterPrune(
            ratio=c.fraction_or_table("ratio", 0.25, 0.0, 0.99),
            layers=c.layers("conv"),
            finetune=c.finetune(),
        )
    if kind == "fixed-point":
        return FixedPoint(
            weight_bits=c.integer("weight_bits", 8, 2, 16),
            activation_bits=c.integer("activation_bits", 8, 2, 16),
            input_bits=c.integer("input_bits", None, 2, 16),
            output_bits=c.integer("output_bits", 16, 2, 16),
            layers=c.layers("all"),
            finetune=c.finetune(),
        )
    if kind == "inq":
        return INQ(
            bits=c.integer("bits", 5, 2, 6),
            portions=_portions(c),
            layers=c.layers("all"),
            finetune=c.finetune(),
        )
    if kind == "share":
        return WeightShare(
            bits=c.integer("bits", 4, 1, 8),
            value_bits=c.integer("value_bits", 8, 2, 16),
            layers=c.layers("fc"),
            finetune=c.finetune(),
        )
    if kind == "low-rank":
        energy = c.fraction_or_table("energy", None, 0.01, 1.0)
        rank = c.get("rank", None, lambda v: _rank_or_table(c, v))
        if (energy is None) == (rank is None):
            raise c.fail("give exactly one of energy, rank")
        return LowRank(energy=energy, rank=rank, layers=c.layers("all"), finetune=c.finetune())
    if kind == "finetune":
        return FinetuneOnly(finetune=c.finetune())
    raise c.fail(f"unknown pass {kind!r} (passes: {', '.join(PASSES)})")


PASSES = ("prune", "filter-prune", "low-rank", "fixed-point", "inq", "share", "finetune")


def _export(c: _Checker) -> ExportOptions:
    def sparse(v: Any) -> Any:
        if v in ("auto", "none"):
            return v
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            return tuple(v)
        raise c.fail(f'sparse must be "auto", "none" or a list of layer names, got {v!r}')

    for old, flag in (("n_pe", "fc_pes"), ("index_bits", "index_bits")):
        if old in c.table:
            # The layout over PEs belongs to the hardware, not to the net: refusing the key
            # beats accepting a value that no longer changes anything.
            raise c.fail(
                f"{old} moved to the Target (key {flag!r}; `--target`, `--fc-pes`,"
                " `--index-bits` on compress and generate); remove it from the recipe"
            )
    opts = ExportOptions(
        sparse=c.get("sparse", "none", sparse),
        sparse_density=c.number("sparse_density", 0.5, 0.0, 1.0),
    )
    c.done()
    return opts


def parse_recipe(
    data: Mapping[str, Any], name: str = "<recipe>", where: str | None = None
) -> Recipe:
    """Validate a parsed recipe table and build its passes; errors name ``where`` (or ``name``)."""
    label = where or name
    top = _Checker(label, "top level", data)
    description = top.get("description", "", lambda v: str(v))
    seed = top.integer("seed", 0, 0, 2**31 - 1)

    def steps(v: Any) -> tuple[Any, ...]:
        if not isinstance(v, list) or not v or not all(isinstance(s, Mapping) for s in v):
            raise top.fail("steps must be a non-empty array of tables ([[steps]])")
        out = []
        for i, table in enumerate(v):
            kind = table.get("pass")
            c = _Checker(label, f"steps[{i}] ({kind})", table)
            c.used.add("pass")
            if not isinstance(kind, str):
                raise c.fail(f"needs pass = one of {', '.join(PASSES)}")
            out.append(_step(c, kind))
            c.done()
        return tuple(out)

    parsed_steps = top.get("steps", None, steps)
    if parsed_steps is None:
        raise top.fail("no steps ([[steps]] tables)")
    export = top.get("export", None, lambda v: _export(_Checker(label, "export", v)))
    top.done()
    return Recipe(
        name=name,
        description=description,
        seed=seed,
        steps=parsed_steps,
        export=export or ExportOptions(),
        source=dict(data),
    )


def shipped_recipes() -> list[str]:
    """Names of the recipes that ship with squeezeforge."""
    folder = resources.files("squeezeforge.models") / "recipes"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_recipe(recipe: str | os.PathLike) -> Recipe:
    """A recipe from a TOML file path, or a shipped recipe by name."""
    path = Path(recipe)
    if path.is_dir():
        raise UserError(f"recipe {str(recipe)!r} is a folder; give a TOML file or a shipped name")
    if path.is_file():
        text, name = path.read_bytes(), path.stem
    else:
        shipped = shipped_recipes()
        if str(recipe) not in shipped:
            raise UserError(
                f"no recipe file {str(recipe)!r} and no shipped recipe of that name"
                f" (shipped: {', '.join(shipped)})"
            )
        name = str(recipe)
        text = (resources.files("squeezeforge.models") / "recipes" / f"{name}.toml").read_bytes()
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"recipe {str(recipe)!r} is not valid TOML: {exc}") from None
    return parse_recipe(data, name, where=str(recipe))
