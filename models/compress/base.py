"""What every pass shares: fine-tuning settings, the context a pass runs in, layer selection.

A pass is a small object with ``apply(model, ctx) -> model`` over a model made by
:func:`~squeezeforge.models.quant.prepare`; passes compose as a plain list (prune -> share ->
fixed point, prune -> INQ -> fixed point...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from squeezeforge.sim.errors import UserError

from ..data import Dataset
from ..quant import CompressedLayer, compute_stages
from ..train import Distillation, fit

__all__ = ["LAYER_GROUPS", "Context", "Finetune", "LayerSpec", "select_layers"]

# A layer selection: one of these group names, or a list of layer names.
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


def select_layers(
    model: nn.Module, spec: LayerSpec, what: str
) -> list[tuple[str, CompressedLayer]]:
    """The compressed layers ``spec`` names: ``"all"``, ``"conv"``, ``"fc"`` or a list of names.

    An unknown name is a :class:`~squeezeforge.sim.errors.UserError` that says which pass
    (``what``) asked for it and which layers exist.
    """
    layers: list[tuple[str, CompressedLayer]] = []
    for st in compute_stages(model):
        if not isinstance(st.module, CompressedLayer):
            raise TypeError("run prepare() on the model before a compression pass")
        layers.append((st.name, st.module))
    if isinstance(spec, str):
        if spec == "all":
            return layers
        if spec == "conv":
            return [(n, m) for n, m in layers if m.is_conv]
        if spec == "fc":
            return [(n, m) for n, m in layers if not m.is_conv]
        raise UserError(f"{what}: layers = {spec!r}; use one of {LAYER_GROUPS} or a list of names")
    names = [n for n, _ in layers]
    unknown = [s for s in spec if s not in names]
    if unknown:
        raise UserError(
            f"{what}: no layer {unknown[0]!r} in this model (layers: {', '.join(names)})"
        )
    return [(n, m) for n, m in layers if n in spec]
