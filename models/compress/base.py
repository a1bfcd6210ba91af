"""What every pass shares: fine-tuning settings, the context a pass runs in, layer selection.

A pass is a small object with ``apply(model, ctx) -> model`` over a model made by
:func:`~squeezeforge.models.quant.prepare`; passes compose as a plain list (prune -> share ->
fixed point, prune -> INQ -> fixed point...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from squeezeforge.sim.errors import UserError

from ..data import Dataset
from ..quant import CompressedLayer, compute_stages
from ..train import Distillation, fit

__all__ = ["LAYER_GROUPS", "Context", "Finetune", "LayerSpec", "per_layer", "select_layers"]

# A layer selection: one of these group names, or a list of layer names and positions.
LAYER_GROUPS = ("all", "conv", "fc")
LayerSpec = str | Sequence[str]


@dataclass(frozen=True)
class Finetune:
    """Fine-tuning after a pass; ``epochs = 0`` skips it.

    ``distillation`` switches on knowledge distillation from the context's teacher (the float
    model the compression started from).
    """

    epochs: int = 0
    lr: float = 1e-3
    batch_size: int = 32
    label_smoothing: float = 0.0
    distillation: Distillation | None = None


@dataclass
class Context:
    """Data, teacher and seed that passes fine-tune with; ``quiet`` silences progress lines."""

    data: Dataset
    teacher: nn.Module | None = None
    seed: int = 0
    quiet: bool = True

    def finetune(self, model: nn.Module, ft: Finetune | None, label: str) -> list[dict]:
        if ft is None or ft.epochs <= 0:
            return []
        return fit(
            model,
            self.data,
            epochs=ft.epochs,
            lr=ft.lr,
            seed=self.seed,
            batch_size=ft.batch_size,
            label_smoothing=ft.label_smoothing,
            teacher=self.teacher if ft.distillation is not None else None,
            distillation=ft.distillation,
            label=label,
            quiet=self.quiet,
        )


def _layer_groups(model: nn.Module) -> dict[str, list[tuple[str, CompressedLayer]]]:
    layers: list[tuple[str, CompressedLayer]] = []
    for st in compute_stages(model):
        if not isinstance(st.module, CompressedLayer):
            raise TypeError("run prepare() on the model before a compression pass")
        layers.append((st.name, st.module))
    return {
        "all": layers,
        "conv": [(n, m) for n, m in layers if m.is_conv],
        "fc": [(n, m) for n, m in layers if not m.is_conv],
    }


def _resolve(
    selector: str, groups: dict[str, list[tuple[str, CompressedLayer]]], what: str
) -> tuple[str, CompressedLayer]:
    """One layer by name, or by position in a group: ``fc[0]`` is the first linear layer,
    ``conv[-1]`` the last conv, ``all[2]`` the third compute layer."""
    layers = groups["all"]
    if selector.endswith("]") and "[" in selector:
        group, _, index = selector[:-1].partition("[")
        if group in groups:
            try:
                i = int(index)
            except ValueError:
                i = None
            members = groups[group]
            if i is None or not -len(members) <= i < len(members):
                raise UserError(
                    f"{what}: {selector!r} selects no layer ({len(members)} {group} layers in"
                    " this model)"
                )
            return members[i]
    for name, m in layers:
        if name == selector:
            return name, m
    raise UserError(
        f"{what}: no layer {selector!r} in this model (layers: {', '.join(n for n, _ in layers)};"
        " or select by position: fc[0], conv[-1], all[2])"
    )


def select_layers(
    model: nn.Module, spec: LayerSpec, what: str
) -> list[tuple[str, CompressedLayer]]:
    """The compressed layers ``spec`` names: ``"all"``, ``"conv"``, ``"fc"``, or a list of layer
    names and positions (``fc[0]``, ``conv[-1]``), in the model's order.

    An unknown name is a :class:`~squeezeforge.sim.errors.UserError` that says which pass
    (``what``) asked for it and which layers exist.
    """
    groups = _layer_groups(model)
    if isinstance(spec, str):
        if spec in groups:
            return groups[spec]
        raise UserError(f"{what}: layers = {spec!r}; use one of {LAYER_GROUPS} or a list of names")
    chosen = {_resolve(s, groups, what)[0] for s in spec}
    return [(n, m) for n, m in groups["all"] if n in chosen]


def per_layer(
    model: nn.Module,
    table: Mapping[str, float],
    selected: Sequence[tuple[str, CompressedLayer]],
    what: str,
) -> dict[str, float]:
    """A per-layer table resolved to layer names: keys are names, positions (``fc[-1]``) or
    ``default`` (every selected layer no other key names). A key outside ``selected``, or two
    keys giving one layer different values, is a :class:`UserError` naming them.
    """
    groups = _layer_groups(model)
    names = [n for n, _ in selected]
    values: dict[str, float] = {}
    source: dict[str, str] = {}
    for key, value in table.items():
        if key == "default":
            continue
        name = _resolve(key, groups, what)[0]
        if name not in names:
            raise UserError(f"{what}: {key!r} is layer {name!r}, not among the selected layers")
        if name in values and values[name] != value:
            raise UserError(
                f"{what}: {source[name]!r} and {key!r} both select layer {name!r} with"
                f" different values ({values[name]} and {value})"
            )
        values[name], source[name] = value, key
    if "default" in table:
        for name in names:
            values.setdefault(name, table["default"])
    return values
