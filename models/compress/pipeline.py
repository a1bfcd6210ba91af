"""``compress``: run a recipe's passes on a trained model, export the IR, report what it cost.

Order of work, so that mistakes surface before anything slow runs: the recipe is parsed and
validated, the checkpoint loaded, the model checked for modules the IR cannot express, and every
layer name the recipe mentions checked against the model, and (when the caller passes an
engine check, as ``squeezeforge compress`` does) every layer's planned weight format checked
against the engines. Only then do the passes train.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from squeezeforge.sim.errors import UserError
from squeezeforge.sim.ir import Conv2d, Dense, Net, check_writable, save_net
from squeezeforge.sim.metrics import agreement, quality
from squeezeforge.sim.progress import progress
from squeezeforge.sim.target import Target, resolve_target

from ..capture import capture, check_input_shape, check_targets, is_stack
from ..data import Dataset, load_digits
from ..export import check_supported, reference_quality, to_net
from ..quant import CompressedLayer, prepare
from ..train import Checkpoint, deterministic, load_checkpoint, predict, score
from .base import Context, per_layer, select_layers
from .fixed import FixedPoint
from .recipe import Recipe, load_recipe
from .report import net_costs, quality_block

__all__ = ["LayerCheck", "compress", "compress_model", "compress_net", "planned_layer_kinds"]

#: Why no engine runs a layer of an IR layer kind with a weight kind, or None (the compiler's
#: ``squeezeforge.codegen.engines.check_supported``; models does not read the engines itself).
LayerCheck = Callable[[str, str], str | None]

# The passes that give a layer its weight kind; every other layer ends with fixed-point weights
# (inq and share refuse a layer that already has a weight format, so at most one applies).
_WEIGHT_KIND_OF_PASS = {"inq": "pow2", "share": "codebook"}


def planned_layer_kinds(recipe: Recipe, model: nn.Module) -> dict[str, tuple[str, str]]:
    """Each compressed layer's IR layer kind and weight kind after ``recipe``, known before
    any training (``model`` as :func:`~squeezeforge.models.quant.prepare` returns it)."""
    kinds = {
        name: (Conv2d.kind if m.is_conv else Dense.kind, "fixed")
        for name, m in select_layers(model, "all", f"recipe {recipe.name!r}")
    }
    for i, step in enumerate(recipe.steps):
        weight_kind = _WEIGHT_KIND_OF_PASS.get(step.kind)
        if weight_kind is None:
            continue
        what = f"recipe {recipe.name!r}: steps[{i}] ({step.kind})"
        for name, _ in select_layers(model, step.layers, what):
            kinds[name] = (kinds[name][0], weight_kind)
    return kinds


def _check_engines(recipe: Recipe, model: nn.Module, check_layer: LayerCheck) -> None:
    for name, (layer_kind, weight_kind) in planned_layer_kinds(recipe, model).items():
        reason = check_layer(layer_kind, weight_kind)
        if reason is not None:
            raise UserError(
                f"recipe {recipe.name!r}: layer {name!r} would get {weight_kind} weights, which"
                f" no engine runs ({reason})"
            )


def _check_layer_names(recipe: Recipe, model: nn.Module) -> None:
    for i, step in enumerate(recipe.steps):
        what = f"recipe {recipe.name!r}: steps[{i}] ({step.kind})"
        spec = getattr(step, "layers", None)
        if spec is None:
            continue
        selected = select_layers(model, spec, what)
        for key in ("sparsity", "ratio"):
            table = getattr(step, key, None)
            if isinstance(table, Mapping):
                per_layer(model, table, selected, f"{what}: {key}")
        reshaped = any(s.kind in ("low-rank", "filter-prune") for s in recipe.steps[:i])
        if not reshaped and callable(getattr(step, "check", None)):
            # A layer the pass cannot change (a filter-prune of a conv that feeds an add) is
            # refused now, unless a pass before it reshapes the model first.
            step.check(model)
    if isinstance(recipe.export.sparse, tuple):
        fc = {n for n, _ in select_layers(model, "fc", f"recipe {recipe.name!r}: export")}
        for name in recipe.export.sparse:
            if name not in fc:
                raise UserError(
                    f"recipe {recipe.name!r}: export: sparse names {name!r}, not a linear layer"
                    f" (linear layers: {', '.join(sorted(fc))})"
                )


def _sparse_layers(recipe: Recipe, model: nn.Module) -> list[str]:
    opts = recipe.export
    if opts.sparse == "none":
        return []
    if isinstance(opts.sparse, tuple):
        return list(opts.sparse)
    out = []
    for name, m in select_layers(model, "fc", "export"):
        stored = m.stored_weights()
        if np.count_nonzero(stored) <= opts.sparse_density * stored.size:
            out.append(name)
    return out


def compress_model(
    model: nn.Module,
    recipe: Recipe,
    *,
    data: Dataset,
    seed: int,
    model_name: str,
    quiet: bool = True,
    check_layer: LayerCheck | None = None,
    target: Target | None = None,
) -> tuple[nn.Module, Net, dict[str, Any]]:
    """Run ``recipe`` on a float ``model``; return the compressed torch model, its IR net and the
    report (without the output path), whose storage and Cr are those of ``target`` (the default
    Target when None).

    ``check_layer`` refuses, before any training, a recipe that gives a layer a weight format
    no engine runs (e.g. a codebook conv).
    """
    target = target or Target()
    check_supported(model)
    with deterministic(seed):
        teacher = copy.deepcopy(model).eval()
        prepared = prepare(model)
        # Cr is the surveys' bytes before over bytes after: "before" is the model as it came
        # in, so a pass that removes filters or factorizes a layer counts what it removed.
        float_before = sum(
            4 * (m.weight.numel() + m.weight.shape[0])
            for m in prepared.modules()
            if isinstance(m, CompressedLayer)
        )
        _check_layer_names(recipe, prepared)
        if check_layer is not None:
            _check_engines(recipe, prepared, check_layer)
        float_out = predict(teacher, data.x_test)
        float_q = quality(float_out, data.y_test)
        steps = list(recipe.steps)
        if not any(isinstance(s, FixedPoint) for s in steps):
            # Activations need formats for the IR: finish with post-training 8-bit fixed point.
            steps.append(FixedPoint())
        ctx = Context(data=data, teacher=teacher, seed=seed, quiet=quiet)
        step_log = []
        with progress(len(steps), f"{recipe.name} passes", quiet=quiet) as bar:
            for step in steps:
                start = time.monotonic()
                bar.update(0, info=step.kind)
                step.apply(prepared, ctx)
                step_log.append(
                    {
                        "pass": step.kind,
                        "seconds": round(time.monotonic() - start, 2),
                        **score(prepared, data.x_test, data.y_test),
                    }
                )
                bar.update(1)
        for name, m in prepared.named_children():
            if isinstance(m, CompressedLayer) and m.output_format is None:
                raise UserError(
                    f"recipe {recipe.name!r}: layer {name!r} has no activation format after the"
                    " last step; end the recipe with a fixed-point step"
                )
        sparse = _sparse_layers(recipe, prepared)
        # Evaluate the fake-quantized model in float64, where it is exact (see models/quant.py).
        fake_logits = predict(copy.deepcopy(prepared).double(), data.x_test)
        fake_q = quality(fake_logits, data.y_test)
        net = to_net(
            prepared,
            data,
            name=f"{model_name}-{recipe.name}",
            sparse=sparse,
            metadata={
                "model": model_name,
                "recipe": recipe.name,
                "recipe_source": recipe.source,
                "seed": seed,
                # generate builds for this Target unless told otherwise.
                "target": target.to_dict(),
                **quality_block(data.task, float_q, fake_q),
            },
        )
    ref_q = reference_quality(net)
    # The fake-quantized model in float64 is exact, so it agrees with the reference on every
    # class and (regression) on every output value.
    ref_real = net.test_outputs * 2.0**-net.output_format.frac
    agreed = agreement(ref_real, fake_logits.reshape(ref_real.shape), data.task)
    layers, totals = net_costs(net, target)
    totals = {
        **totals,
        "float_bytes": float_before,
        "compression_ratio": float_before / totals["bytes"] if totals["bytes"] else 0.0,
    }
    report = {
        "recipe": recipe.name,
        "model": model_name,
        "seed": seed,
        "task": data.task,
        "test_images": int(net.test_inputs.shape[0]),
        **quality_block(
            data.task,
            float_q,
            fake_q,
            reference=ref_q,
            agreement=agreed,
            # Regression: how far quantization moved the outputs, whatever the targets.
            reference_vs_float=(
                quality(ref_real, float_out.reshape(ref_real.shape))
                if data.task == "regression"
                else None
            ),
        ),
        "compression_ratio": totals["compression_ratio"],
        "target": target.to_dict(),
        "totals": totals,
        "layers": layers,
        "steps": step_log,
    }
    return prepared, net, report


def compress_net(
    checkpoint_or_model: str | os.PathLike | Checkpoint | nn.Module,
    recipe: str | os.PathLike | Recipe,
    *,
    model_name: str | None = None,
    data: Dataset | None = None,
    seed: int | None = None,
    quiet: bool = True,
    check_layer: LayerCheck | None = None,
    target: Target | str | os.PathLike | None = None,
) -> tuple[Net, dict[str, Any]]:
    """:func:`compress` without the file: the IR net and the report (without ``"net"``)."""
    target = resolve_target(target)
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    if isinstance(checkpoint_or_model, nn.Module):
        model = checkpoint_or_model
        name = model_name or type(model).__name__.lower()
    else:
        ckpt = (
            checkpoint_or_model
            if isinstance(checkpoint_or_model, Checkpoint)
            else load_checkpoint(checkpoint_or_model)
        )
        model, name = ckpt.model, model_name or ckpt.model_name
    if is_stack(model):
        check_supported(model)  # before the data loads: a plain stack needs no input shape
    data = data if data is not None else load_digits()
    check_targets(check_input_shape(model, data.input_shape, data.name), data)
    notes: list[str] = []
    if not is_stack(model):
        # A custom forward() is traced into a stack of layers, checked before any training.
        model = capture(model, data.input_shape, notes=notes)
        check_supported(model)
    _, net, report = compress_model(
        model,
        recipe,
        data=data,
        seed=recipe.seed if seed is None else seed,
        model_name=name,
        quiet=quiet,
        check_layer=check_layer,
        target=target,
    )
    if notes:
        report["notes"] = notes
        net = net.replace(metadata={**net.metadata, "notes": notes})
    return net, report


def compress(
    checkpoint_or_model: str | os.PathLike | Checkpoint | nn.Module,
    recipe: str | os.PathLike | Recipe,
    out_path: str | os.PathLike,
    *,
    model_name: str | None = None,
    data: Dataset | None = None,
    seed: int | None = None,
    quiet: bool = True,
    check_layer: LayerCheck | None = None,
    target: Target | str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Compress a checkpoint (path or loaded) or a float model with ``recipe`` (a shipped name,
    a TOML path or a parsed :class:`Recipe`), write the IR net to ``out_path`` atomically and
    return the report dict (see ``docs/compression.md``).

    ``seed`` overrides the recipe's; the same seed gives a byte-identical net file. ``target``
    (a Target, a preset name or a TOML path; the default Target when None) is the hardware the
    report's storage and Cr are computed for; the net file does not depend on it.
    ``check_layer`` is passed to :func:`compress_model`.
    """
    # Resolved and parsed before the output is probed, as before: a bad name comes first.
    target = resolve_target(target)
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    # Fine-tuning takes minutes: an output that cannot be written is reported before it.
    check_writable(out_path)
    net, report = compress_net(
        checkpoint_or_model,
        recipe,
        model_name=model_name,
        data=data,
        seed=seed,
        quiet=quiet,
        check_layer=check_layer,
        target=target,
    )
    save_net(net, out_path)
    return {"net": str(Path(out_path)), **report}
