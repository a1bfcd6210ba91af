"""Compiling a net into an accelerator plan: a list of small, named passes.

Each pass takes the plan built so far and returns a new one; a user (or a test) can run them one
at a time and look at what each did::

    plan = Plan.start(net, target)
    for p in PASSES:
        plan = p(plan)

Every pass reads the plan's :class:`~squeezeforge.sim.target.Target`: it sizes the engines, lays
each FC matrix out in CSC over the Target's PEs and index width (the net holds only the
matrix), and drives the cycle models. The plan ends with one :class:`Step` per hardware run
(a conv with its pooling fused, or a fully connected layer), the engine each runs on, the
engines' elaboration parameters and memory images, and the estimated cycles of every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..hw.top import Top, TopEngine, TopParams, TopStep
from ..sim.errors import UserError
from ..sim.ir import AvgPool2d, Conv2d, Dense, IRError, MaxPool2d, Net, SparseDense
from ..sim.reference import run_net
from ..sim.storage import net_act_bits
from ..sim.target import Target
from .engines import EngineBinding, binding_for

__all__ = ["PASSES", "Plan", "Step", "compile_net", "top_params"]


@dataclass(frozen=True)
class Step:
    """One run of one engine: a compute layer, with a 2x2 pool fused when one follows.

    A grouped conv (depthwise included) and an average pool (a depthwise conv with constant
    weights, item 6 of the numeric contract) run as one step per group, all in one *phase*:
    they read the same activation buffer, group ``g`` at word ``in_offset``, and write group
    ``g``'s channels at ``out_offset`` of the other. Each other layer is a phase of its own.
    """

    index: int
    layer: Conv2d | Dense | SparseDense
    layers: tuple[str, ...]  # IR layer names this step computes (conv + pool, or fc)
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    pool: bool = False
    engine: str = ""  # engine instance name, set by assign_engines
    cfg: dict[str, int] = field(default_factory=dict)
    cycles_estimated: int = 0
    cycles_ideal: float = 0.0
    phase: int = 0
    in_offset: int = 0
    out_offset: int = 0

    @property
    def in_count(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_count(self) -> int:
        return math.prod(self.out_shape)


@dataclass(frozen=True)
class Plan:
    net: Net
    target: Target = field(default_factory=Target)
    steps: tuple[Step, ...] = ()
    engines: dict[str, EngineBinding] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    act_bits: int = 0
    log: tuple[str, ...] = ()

    @classmethod
    def start(cls, net: Net, target: Target | None = None) -> Plan:
        return cls(net=net, target=target or Target())

    def noted(self, message: str, **changes: Any) -> Plan:
        return replace(self, log=(*self.log, message), **changes)


def _pool_weight_kind(net: Net) -> str:
    """The weight kind an average pool's conv asks for: power-of-two when every conv of the
    net has power-of-two weights, so the pool needs no second conv engine."""
    kinds = {layer.weight_format.kind for layer in net.layers if isinstance(layer, Conv2d)}
    return "pow2" if kinds == {"pow2"} else "fixed"


def _engine_layer(
    layer: object, in_shape: tuple[int, ...], pool_kind: str
) -> Conv2d | Dense | SparseDense | None:
    """What an engine computes for ``layer``: itself, the depthwise conv an average pool is
    (with ``pool_kind`` weights where it can), or None for a layer that needs no engine of its
    own (flatten, a fused max pool)."""
    if isinstance(layer, AvgPool2d):
        return layer.as_conv(in_shape[0], pool_kind)
    if isinstance(layer, Conv2d | Dense | SparseDense):
        return layer
    return None


def check_supported(plan: Plan) -> Plan:
    """Every layer must map onto an engine; say which one does not, before any long step."""
    prev: object = None
    pool_kind = _pool_weight_kind(plan.net)
    for layer, shape in zip(plan.net.layers, plan.net.input_shapes(), strict=True):
        if isinstance(layer, MaxPool2d) and not isinstance(prev, Conv2d):
            raise IRError(layer.name, "kind", "a max pool must follow a conv layer to be fused")
        work = _engine_layer(layer, shape, pool_kind)
        if work is not None:
            binding_for(work, plan.target)  # raises, naming the layer and the reason
        prev = layer
    return plan.noted("check_supported: every layer maps onto an engine")


def fuse_steps(plan: Plan) -> Plan:
    """Group the IR layers into hardware steps: conv (+ pool), dense; flatten is free. A grouped
    conv or an average pool becomes one step per group (see :class:`Step`)."""
    steps: list[Step] = []
    layers = plan.net.layers
    shapes = plan.net.input_shapes()
    outs = plan.net.shapes()
    i = 0
    phase = 0
    pool_kind = _pool_weight_kind(plan.net)
    while i < len(layers):
        layer = _engine_layer(layers[i], shapes[i], pool_kind)
        if layer is None:  # flatten
            i += 1
            continue
        pool = i + 1 < len(layers) and isinstance(layers[i + 1], MaxPool2d)
        names = (layers[i].name, layers[i + 1].name) if pool else (layers[i].name,)
        in_shape, out_shape = shapes[i], outs[i + 1] if pool else outs[i]
        groups = layer.groups if isinstance(layer, Conv2d) else 1
        if groups == 1:
            steps.append(Step(len(steps), layer, names, in_shape, out_shape, pool, phase=phase))
        else:
            assert isinstance(layer, Conv2d)
            g_in = (in_shape[0] // groups, *in_shape[1:])
            g_out = (out_shape[0] // groups, *out_shape[1:])
            for g in range(groups):
                steps.append(
                    Step(
                        len(steps),
                        layer.group(g),
                        names,
                        g_in,
                        g_out,
                        pool,
                        phase=phase,
                        in_offset=g * math.prod(g_in),
                        out_offset=g * math.prod(g_out),
                    )
                )
        phase += 1
        i += 2 if pool else 1
    return plan.noted(f"fuse_steps: {len(layers)} layers -> {len(steps)} steps", steps=tuple(steps))


def assign_engines(plan: Plan) -> Plan:
    """One engine instance per engine flavour (engine and weight format) the net needs."""
    bindings = [binding_for(s.layer, plan.target) for s in plan.steps]
    steps = tuple(replace(s, engine=b.name) for s, b in zip(plan.steps, bindings, strict=True))
    engines = {b.name: b for b in bindings}
    return plan.noted(f"assign_engines: {', '.join(engines)}", steps=steps, engines=engines)


def size_engines(plan: Plan) -> Plan:
    """Elaboration parameters: engine shapes from the Target; widths are the maxima over the
    steps (or the Target's activation width); memories hold them all."""
    widest = net_act_bits([s.layer for s in plan.steps], Target())
    act_bits = net_act_bits([s.layer for s in plan.steps], plan.target)
    if act_bits < widest:
        raise UserError(
            f"target key 'act_bits': {act_bits} bits, but the net has {widest}-bit activations"
        )
    params = {
        name: binding.size([s for s in plan.steps if s.engine == name], act_bits)
        for name, binding in plan.engines.items()
    }
    return plan.noted(
        f"size_engines: activations {act_bits} bits", params=params, act_bits=act_bits
    )


def place_weights(plan: Plan) -> Plan:
    """Per-layer base addresses in each engine's memories, run-time cfg, memory images."""
    images: dict[str, dict[str, Any]] = {}
    steps = []
    for name, binding in plan.engines.items():
        mine = [s for s in plan.steps if s.engine == name]
        cfgs, image = binding.place(mine, plan.params[name])
        images[name] = image
        steps.extend(replace(s, cfg=c) for s, c in zip(mine, cfgs, strict=True))
    steps.sort(key=lambda s: s.index)
    return plan.noted("place_weights", steps=tuple(steps), images=images)


def check_fits(plan: Plan) -> Plan:
    """Every step fits the engine sized for it (a fixed-size engine may refuse a layer)."""
    for s in plan.steps:
        reason = plan.engines[s.engine].fits(s, plan.params[s.engine])
        if reason is not None:
            raise IRError(s.layers[0], "engine", f"does not fit {s.engine}: {reason}")
    return plan.noted("check_fits: every step fits its engine")


# The sparse unit's cycles depend on which activations are zero: estimate them on the reference
# activations of (up to) this many of the net's test images.
ESTIMATE_IMAGES = 100


def estimate_cycles(plan: Plan) -> Plan:
    """Cycles of every step from the engines' cycle models (plus the sequencer's launch)."""
    net = plan.net
    x = net.test_inputs[:ESTIMATE_IMAGES].astype(np.int64)
    taps = run_net(net, x, taps=True) if len(x) else []
    names = [layer.name for layer in net.layers]
    steps = []
    for s in plan.steps:
        i = names.index(s.layers[0])
        step_in = x if i == 0 else taps[i - 1]
        step_in = step_in.reshape(len(step_in), -1)[:, s.in_offset : s.in_offset + s.in_count]
        if len(step_in) == 0:  # a net without test vectors: assume dense activations
            step_in = np.ones((1, s.in_count), dtype=np.int64)
        # Phase 0 reads i_pixel; later phases a buffer, whose read port adds a cycle.
        delay = Top.PREFETCH_CYCLES if s.phase else 0
        cycles, ideal = plan.engines[s.engine].cycles(s, plan.params[s.engine], step_in, delay)
        steps.append(
            replace(
                s,
                cycles_estimated=round(cycles) + Top.LAUNCH_CYCLES,
                cycles_ideal=ideal,
            )
        )
    total = sum(s.cycles_estimated for s in steps)
    return plan.noted(f"estimate_cycles: {total} per inference", steps=tuple(steps))


PASSES: tuple[Callable[[Plan], Plan], ...] = (
    check_supported,
    fuse_steps,
    assign_engines,
    size_engines,
    check_fits,
    place_weights,
    estimate_cycles,
)


def top_params(plan: Plan) -> TopParams:
    """The frozen parameters the top level (:class:`~squeezeforge.hw.top.Top`) is built from."""
    return TopParams(
        act_bits=plan.act_bits,
        steps=tuple(
            TopStep(s.engine, s.in_count, s.out_count, s.cfg, s.phase, s.in_offset, s.out_offset)
            for s in plan.steps
        ),
        engines=tuple(
            TopEngine(name, binding, plan.params[name], plan.images[name])
            for name, binding in plan.engines.items()
        ),
    )


def compile_net(net: Net, target: Target | None = None) -> Plan:
    """Run every pass for ``target`` (the default Target when None)."""
    plan = Plan.start(net, target)
    for p in PASSES:
        plan = p(plan)
    return plan
