"""The engines the compiler can place layers on: one line per engine package.

Each entry is an :class:`~squeezeforge.hw.engine.EngineBinding` subclass; the compiler reaches
an engine only through that contract (supported, fits, size, config and images, cycles,
storage, build). Adding an engine is one package in ``hw/`` and one line in :data:`ENGINES`
(``docs/engines.md``).
"""

from __future__ import annotations

from ..hw.conv import ConvBinding
from ..hw.engine import EngineBinding
from ..hw.sparse_fc import SparseFCBinding
from ..sim.ir import IRError
from ..sim.target import Target

__all__ = ["ENGINES", "EngineBinding", "binding_for", "check_supported"]

ENGINES: tuple[type[EngineBinding], ...] = (
    ConvBinding,
    SparseFCBinding,
)


def check_supported(layer_kind: str, weight_kind: str) -> str | None:
    """Why no engine runs a ``layer_kind`` layer with ``weight_kind`` weights, or None.

    Pure rules on kinds: ``squeezeforge compress`` asks before training, so a recipe that would
    give, say, a codebook conv is refused in seconds rather than after fine-tuning.
    """
    owners = [e for e in ENGINES if e.runs(layer_kind)]
    if not owners:
        return f"no engine runs {layer_kind} layers"
    reasons = [e.unsupported(layer_kind, weight_kind) for e in owners]
    if any(r is None for r in reasons):
        return None
    return "; ".join(r for r in reasons if r)


def binding_for(layer, target: Target | None = None) -> EngineBinding:
    """The engine flavour that runs ``layer``, sized by ``target`` (the default when None).

    Raises
    ------
    IRError
        Naming the layer and why no engine runs it.
    """
    for engine in ENGINES:
        if (
            engine.runs(layer.kind)
            and engine.unsupported(layer.kind, layer.weight_format.kind) is None
        ):
            return engine.for_layer(layer, target)
    reason = check_supported(layer.kind, layer.weight_format.kind)
    field = "weight_format" if any(e.runs(layer.kind) for e in ENGINES) else "kind"
    raise IRError(layer.name, field, reason or "no engine runs it")
