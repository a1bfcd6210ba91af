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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..hw.top import Top, TopEngine, TopParams, TopStep, split_problem
from ..sim.errors import UserError
from ..sim.ir import (
    NET_INPUT,
    Add,
    AvgPool2d,
    Concat,
    Conv2d,
    Dense,
    Flatten,
    IRError,
    MaxPool2d,
    Net,
    SparseDense,
)
from ..sim.reference import run_net
from ..sim.storage import net_act_bits
from ..sim.target import Target
from .engines import EngineBinding, binding_for

__all__ = [
    "PASSES",
    "Plan",
    "Step",
    "chain_steps",
    "compile_net",
    "pipeline_stages",
    "place_activations",
    "stage_interval",
    "top_params",
]


@dataclass(frozen=True)
class Step:
    """One run of one engine: a compute layer, with a 2x2 pool fused when one follows.

    A grouped conv (depthwise included) and an average pool (a depthwise conv with constant
    weights, item 6 of the numeric contract) run as one step per group; an add runs as the 1x1
    conv over both its inputs that computes it exactly (:meth:`~squeezeforge.sim.ir.Add.as_conv`).

    A step reads its ``sources`` (tensor names; a flatten or a concat is only a view of the
    tensors under it) joined along the channels, the ``in_count`` words from ``in_offset`` of
    that, and writes ``out_count`` words at ``out_offset`` of the tensor ``layers[-1]`` names.
    Where these words lie in the activation memory (:class:`~squeezeforge.hw.top.Top`) is
    decided by :func:`place_activations`: ``in_segments`` (address, count), ``out_address``,
    or the pixel stream (``from_pixels``) and the score stream (``to_scores``).
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
    sources: tuple[str, ...] = ()
    in_offset: int = 0
    out_offset: int = 0
    in_segments: tuple[tuple[int, int], ...] = ()
    out_address: int = 0
    from_pixels: bool = False
    to_scores: bool = False
    #: Takes the previous step's outputs as its engine emits them (:func:`chain_steps`).
    chained: bool = False
    #: The net's first step, whose engine may load the next image's pixels while the first
    #: pipeline stage finishes this one (:func:`chain_steps`, :func:`pipeline_stages`).
    prefetched: bool = False

    @property
    def in_count(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_count(self) -> int:
        return math.prod(self.out_shape)

    @property
    def output(self) -> str:
        """The tensor this step writes (part of, for a group)."""
        return self.layers[-1]


@dataclass(frozen=True)
class Plan:
    net: Net
    target: Target = field(default_factory=Target)
    steps: tuple[Step, ...] = ()
    engines: dict[str, EngineBinding] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    act_bits: int = 0
    #: The first step of the second pipeline stage (None: one image at a time).
    split: int | None = None
    #: With two stages and the first step's pixels loaded during the first stage's last step:
    #: the first stage's cycles per image, back to back (None: no such prefetch).
    stage_period: int | None = None
    log: tuple[str, ...] = ()

    @property
    def cycles_estimated(self) -> int:
        """Estimated cycles of one inference (one image at a time): the sum over the steps."""
        return sum(s.cycles_estimated for s in self.steps)

    @property
    def interval_estimated(self) -> int:
        """Estimated cycles between two images fed back to back: the slower stage's cycles
        plus the cycle its sequencer spends idle between images; the latency when the net
        runs one image at a time."""
        if self.split is None:
            return self.cycles_estimated
        return stage_interval(
            [s.cycles_estimated for s in self.steps[: self.split]],
            [s.cycles_estimated for s in self.steps[self.split :]],
            self.stage_period,
        )

    @classmethod
    def start(cls, net: Net, target: Target | None = None) -> Plan:
        return cls(net=net, target=target or Target())

    def noted(self, message: str, **changes: Any) -> Plan:
        return replace(self, log=(*self.log, message), **changes)


def _pool_weight_kind(net: Net) -> str:
    """The weight kind the convs that pools and adds become ask for: power-of-two when every
    conv of the net has power-of-two weights, so they need no second conv engine."""
    kinds = {layer.weight_format.kind for layer in net.layers if isinstance(layer, Conv2d)}
    return "pow2" if kinds == {"pow2"} else "fixed"


def _engine_layer(net: Net, index: int, pool_kind: str) -> Conv2d | Dense | SparseDense | None:
    """What an engine computes for layer ``index``: itself, the depthwise conv an average pool
    is, the 1x1 conv an add is (with ``pool_kind`` weights where they can), or None for a layer
    that needs no engine of its own (flatten and concat are views, a max pool is fused)."""
    layer = net.layers[index]
    shapes, formats = net.tensor_shapes(), net.tensor_formats()
    srcs = net.sources(index)
    if isinstance(layer, AvgPool2d):
        return layer.as_conv(shapes[srcs[0]][0], pool_kind)
    if isinstance(layer, Add):
        if len(shapes[srcs[0]]) != 3:
            raise IRError(
                layer.name, "kind", "an add of flat tensors has no engine (add before the flatten)"
            )
        return layer.as_conv(formats[srcs[0]], formats[srcs[1]], shapes[srcs[0]][0], pool_kind)
    if isinstance(layer, Conv2d | Dense | SparseDense):
        return layer
    return None


def _fused_pool(net: Net, index: int) -> bool:
    """Whether a max pool follows layer ``index`` as the only reader of its output."""
    nxt = index + 1
    return (
        nxt < len(net.layers)
        and isinstance(net.layers[nxt], MaxPool2d)
        and net.consumers(net.layers[index].name) == [nxt]
    )


def check_supported(plan: Plan) -> Plan:
    """Every layer must map onto an engine; say which one does not, before any long step."""
    net = plan.net
    pool_kind = _pool_weight_kind(net)
    for k, layer in enumerate(net.layers):
        if isinstance(layer, MaxPool2d) and not (
            k and _fused_pool(net, k - 1) and isinstance(net.layers[k - 1], Conv2d | Add)
        ):
            raise IRError(
                layer.name,
                "kind",
                "a max pool must follow the conv (or add) it pools, as the"
                " only reader of its output, to be fused",
            )
        work = _engine_layer(net, k, pool_kind)
        if work is not None:
            binding_for(work, plan.target)  # raises, naming the layer and the reason
    return plan.noted("check_supported: every layer maps onto an engine")


def fuse_steps(plan: Plan) -> Plan:
    """Group the IR layers into hardware steps: conv (+ pool), dense, add (+ pool); flatten and
    concat are free. A grouped conv or an average pool becomes one step per group."""
    net = plan.net
    steps: list[Step] = []
    shapes = net.tensor_shapes()
    pool_kind = _pool_weight_kind(net)
    k = 0
    while k < len(net.layers):
        layer = _engine_layer(net, k, pool_kind)
        if layer is None:  # flatten, concat
            k += 1
            continue
        pool = _fused_pool(net, k)
        names = (net.layers[k].name, net.layers[k + 1].name) if pool else (net.layers[k].name,)
        srcs = net.sources(k)
        in_shape = (sum(shapes[s][0] for s in srcs), *shapes[srcs[0]][1:])
        out_shape = shapes[names[-1]]
        groups = layer.groups if isinstance(layer, Conv2d) else 1
        g_in = (in_shape[0] // groups, *in_shape[1:])
        g_out = (out_shape[0] // groups, *out_shape[1:])
        for g in range(groups):
            steps.append(
                Step(
                    len(steps),
                    layer.group(g) if groups > 1 else layer,
                    names,
                    g_in,
                    g_out,
                    pool,
                    sources=srcs,
                    in_offset=g * math.prod(g_in),
                    out_offset=g * math.prod(g_out),
                )
            )
        k += 2 if pool else 1
    return plan.noted(
        f"fuse_steps: {len(net.layers)} layers -> {len(steps)} steps", steps=tuple(steps)
    )


def _pieces(net: Net, tensor: str) -> list[tuple[str, int]]:
    """The stored tensors a tensor is made of, in order, with their sizes: itself, or for a
    flatten or a concat, the tensors under it."""
    if tensor == NET_INPUT:
        return [(NET_INPUT, math.prod(net.input_shape))]
    k = [layer.name for layer in net.layers].index(tensor)
    layer = net.layers[k]
    if isinstance(layer, Flatten | Concat):
        return [p for src in net.sources(k) for p in _pieces(net, src)]
    return [(tensor, math.prod(net.tensor_shapes()[tensor]))]


def _slice(pieces: list[tuple[str, int]], start: int, count: int) -> list[tuple[str, int, int]]:
    """Words ``start`` to ``start + count`` of ``pieces`` joined: (tensor, offset, count)."""
    out = []
    base = 0
    for name, size in pieces:
        lo, hi = max(start, base), min(start + count, base + size)
        if lo < hi:
            out.append((name, lo - base, hi - lo))
        base += size
    return out


def place_activations(plan: Plan) -> Plan:
    """Lay the stored tensors out in the one activation memory, and turn each step's input
    and output into addresses.

    A tensor lives from the first step that writes it to the last that reads it; two tensors
    whose lives overlap get disjoint words (first fit, in the order they are written), so a
    plain stack ping-pongs between two regions. The net's input comes from the pixel stream,
    which can be read once, in order; the steps that write the net's output send it to the
    score stream.
    """
    net = plan.net
    out_pieces = _pieces(net, net.layers[-1].name)
    if any(name == NET_INPUT for name, _ in out_pieces):
        raise IRError(net.layers[-1].name, "inputs", "the net's output is its input unchanged")
    out_names = [name for name, _ in out_pieces]
    reads = {
        s.index: _slice(
            [p for src in s.sources for p in _pieces(net, src)], s.in_offset, s.in_count
        )
        for s in plan.steps
    }
    first_write: dict[str, int] = {}
    last_read: dict[str, int] = {}
    for s in plan.steps:
        first_write.setdefault(s.output, s.index)
        for name, _, _ in reads[s.index]:
            last_read[name] = s.index
    # The pixel stream: read once, in order, by steps that read nothing else.
    pixel_words = 0
    for s in plan.steps:
        names = {name for name, _, _ in reads[s.index]}
        if NET_INPUT in names:
            start = reads[s.index][0][1]
            if names != {NET_INPUT} or start != pixel_words:
                raise IRError(
                    s.layers[0],
                    "inputs",
                    "the hardware streams the net's input once, in order: let one layer read"
                    " it (a stem conv), and the others read that layer",
                )
            pixel_words += s.in_count
    # The score stream: whole tensors, in the order the net's output lists them.
    scored = [s for s in plan.steps if s.output in out_names]
    if [s.output for s in scored] != sorted((s.output for s in scored), key=out_names.index) or any(
        name in last_read for name in out_names
    ):
        raise IRError(
            net.layers[-1].name,
            "inputs",
            "the layers that make the net's output must run in its order and feed nothing else",
        )
    shapes = net.tensor_shapes()
    sizes = {name: math.prod(shapes[name]) for name in first_write}
    address: dict[str, int] = {}
    placed: list[tuple[int, int, int, int]] = []  # (start, end, first write, last read)
    for name, born in sorted(first_write.items(), key=lambda kv: kv[1]):
        if name in out_names:
            continue
        dies = last_read.get(name, born)
        busy = sorted((a, b) for a, b, w, r in placed if w <= dies and born <= r)
        at = 0
        for a, b in busy:
            if at + sizes[name] <= a:
                break
            at = max(at, b)
        address[name] = at
        placed.append((at, at + sizes[name], born, dies))
    steps = []
    for s in plan.steps:
        segs = tuple(
            (address[name] + off, count) for name, off, count in reads[s.index] if name != NET_INPUT
        )
        steps.append(
            replace(
                s,
                in_segments=segs,
                out_address=address.get(s.output, 0) + s.out_offset,
                from_pixels=not segs,
                to_scores=s.output in out_names,
            )
        )
    depth = max((b for _, b, _, _ in placed), default=0)
    return plan.noted(
        f"place_activations: {len(address)} stored tensors in {depth} words",
        steps=tuple(steps),
    )


def assign_engines(plan: Plan) -> Plan:
    """One engine instance per engine flavour (engine and weight format) the net needs."""
    bindings = [binding_for(s.layer, plan.target) for s in plan.steps]
    steps = tuple(replace(s, engine=b.name) for s, b in zip(plan.steps, bindings, strict=True))
    engines = {b.name: b for b in bindings}
    return plan.noted(f"assign_engines: {', '.join(engines)}", steps=steps, engines=engines)


def chain_steps(plan: Plan) -> Plan:
    """With the Target's ``double_buffer``: a step whose engine can load while it computes
    (:attr:`~squeezeforge.hw.engine.EngineBinding.CHAINS`) and that reads exactly the words
    the step before it wrote, on the same engine, takes them as they leave the engine
    (``chained``); the top level streams them into the engine's free input bank, and the step
    computes from the cycle the one before is done. With two pipeline stages too, the first
    step is marked ``prefetched``: its engine gets the second bank, and if the first stage
    ends on that engine, the next image's pixels load while it finishes the last one
    (:func:`pipeline_stages`)."""
    if not plan.target.double_buffer:
        return plan.noted("chain_steps: none (no double_buffer)")
    steps = list(plan.steps)
    head = steps[0]
    if plan.target.pipeline and head.from_pixels and plan.engines[head.engine].CHAINS:
        steps[0] = replace(head, prefetched=True)
    for k in range(1, len(steps)):
        before, s = steps[k - 1], steps[k]
        if (
            plan.engines[s.engine].CHAINS
            and s.engine == before.engine
            and not before.to_scores
            and not s.from_pixels
            and s.in_segments == ((before.out_address, before.out_count),)
        ):
            steps[k] = replace(s, chained=True)
    chained = [s.index for s in steps if s.chained]
    return plan.noted(
        f"chain_steps: {', '.join(map(str, chained)) if chained else 'none'}", steps=tuple(steps)
    )


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


def _net_values(net: Net) -> dict[str, np.ndarray]:
    """Every tensor of the net on (up to) ``ESTIMATE_IMAGES`` of its test images."""
    x = net.test_inputs[:ESTIMATE_IMAGES].astype(np.int64)
    values = {NET_INPUT: x}
    if len(x):
        values.update(zip([la.name for la in net.layers], run_net(net, x, taps=True), strict=True))
    return values


def _step_inputs(s: Step, values: dict[str, np.ndarray]) -> np.ndarray:
    """The words step ``s`` reads, one row per test image of ``values`` (:func:`_net_values`;
    ones for a net without test vectors: dense activations)."""
    n = len(values[NET_INPUT])
    if not n:
        return np.ones((1, s.in_count), dtype=np.int64)
    joined = np.concatenate([values[src].reshape(n, -1) for src in s.sources], axis=1)
    return joined[:, s.in_offset : s.in_offset + s.in_count]


@dataclass(frozen=True)
class _Timed:
    """A step on a time line: the cycle it was launched (the done of the step before), its
    ``done`` and, on an engine that chains, its run."""

    launched: int
    done: int
    run: Any = None


def _time_line(
    plan: Plan, steps: Sequence[Step], start: int = 0, wrap: _Timed | None = None
) -> list[_Timed]:
    """The steps of one image one after another from cycle ``start`` (the done of the step
    before them), each step's ``cycles_estimated`` as the time a step launched at the done of
    the one before takes, except where a step follows the run before it on its engine:

    - a chained step (:func:`chain_steps`) is taken as soon as the engine takes a start once
      the step before has its input; its input is the step before's output as it leaves (the
      last word the cycle before that step's done);
    - with ``wrap`` (the previous image's last step, on the first step's engine), the first
      step is prefetched: taken during that step, its pixels one a cycle from then.

    The engine's run model (:meth:`~squeezeforge.hw.engine.EngineBinding.chain_run`) places
    each such step after the run before it: its compute may begin before that run is done.
    """
    timed: list[_Timed] = []
    t = start
    for j, s in enumerate(steps):
        engine = plan.engines[s.engine]
        if not engine.CHAINS:
            timed.append(_Timed(t, t + s.cycles_estimated))
        elif s.chained or (j == 0 and wrap is not None):
            before = timed[-1] if s.chained else wrap
            assert before is not None and before.run is not None
            if s.chained:
                taken = max(before.run.last_word, before.run.began) + 1
                last_word = before.run.done - 1
            else:
                taken = max(
                    max(before.run.last_word, before.run.began) + 1,
                    before.launched + Top.WRAP_TAKE_CYCLES,
                )
                last_word = taken + s.in_count
                if last_word > before.done:
                    # The pixels pause in the cycle after the stage's done: the first step's
                    # launch state, which routes no stream.
                    last_word += 1
            run = engine.chain_run(
                s,
                plan.params[s.engine],
                began=before.run.next_began(taken),
                last_word=last_word,
                before=before.run,
            )
            timed.append(_Timed(t, run.done, run))
        else:
            # Launched at the done of the step before: its engine is idle.
            began = t + Top.LAUNCH_CYCLES
            delay = 0 if s.from_pixels else Top.PREFETCH_CYCLES
            run = engine.chain_run(
                s,
                plan.params[s.engine],
                began=began,
                last_word=began + s.in_count + delay,
                before=None,
            )
            timed.append(_Timed(t, run.done, run))
        t = timed[-1].done
    return timed


def estimate_cycles(plan: Plan) -> Plan:
    """Cycles of every step from the engines' cycle models (plus the sequencer's launch); a
    chained step's from the engine's run model after the step before (:func:`_time_line`)."""
    values = _net_values(plan.net)
    steps = []
    for s in plan.steps:
        step_in = _step_inputs(s, values)
        # The pixel stream feeds a step at once; the memory's read port adds a cycle.
        delay = 0 if s.from_pixels else Top.PREFETCH_CYCLES
        cycles, ideal = plan.engines[s.engine].cycles(s, plan.params[s.engine], step_in, delay)
        steps.append(
            replace(s, cycles_estimated=round(cycles) + Top.LAUNCH_CYCLES, cycles_ideal=ideal)
        )
    if any(s.chained for s in steps):
        dones = [0] + [t.done for t in _time_line(plan, steps)]
        steps = [
            replace(s, cycles_estimated=dones[k + 1] - dones[k]) if s.chained else s
            for k, s in enumerate(steps)
        ]
    total = sum(s.cycles_estimated for s in steps)
    return plan.noted(f"estimate_cycles: {total} per inference", steps=tuple(steps))


def stage_interval(first: Sequence[int], second: Sequence[int], period: int | None = None) -> int:
    """Cycles between two images through two pipeline stages whose steps take ``first`` and
    ``second`` cycles: each stage's sequencer idles one cycle between its images, and the
    slower stage sets the pace (the faster one waits on the boundary queue). With ``period``,
    the first stage's cycles per image when the next image's pixels load during its last step
    (:func:`stage_period`): it never idles."""
    if period is None:
        return max(sum(first), sum(second)) + Top.IDLE_CYCLES
    return max(period, sum(second) + Top.IDLE_CYCLES)


def stage_period(plan: Plan, steps: Sequence[Step]) -> int:
    """Cycles per image of a first stage whose first step is prefetched during its last, images
    back to back: the third image's, when the time line repeats itself."""
    images = [_time_line(plan, steps)]
    for _ in range(2):
        images.append(_time_line(plan, steps, images[-1][-1].done, wrap=images[-1][-1]))
    return images[-1][-1].done - images[-2][-1].done


def pipeline_stages(plan: Plan) -> Plan:
    """With the Target's ``pipeline``: split the steps into two stages on disjoint engines, at
    the split that balances them best (the smallest interval); the second stage's first step
    reads the boundary queue, which feeds it at once, like the pixel stream. A net with no
    such split (one engine, or engines that alternate) runs one image at a time, said in the
    log."""
    if not plan.target.pipeline:
        return plan.noted("pipeline_stages: one image at a time")
    steps = plan.steps
    splits = [k for k in range(1, len(steps)) if split_problem(steps, k) is None]
    # The reference run over the test images, once for every candidate head step.
    values = _net_values(plan.net) if splits else {}
    first = steps[0]
    best: tuple[int, int, Step, int | None] | None = None
    for k in splits:
        head = steps[k]
        cycles, _ = plan.engines[head.engine].cycles(
            head, plan.params[head.engine], _step_inputs(head, values), 0
        )
        head = replace(head, cycles_estimated=round(cycles) + Top.LAUNCH_CYCLES)
        # The next image's pixels load during the first stage's last step only on the engine
        # that runs its first step.
        wraps = (
            stage_period(plan, steps[:k])
            if first.prefetched and steps[k - 1].engine == first.engine
            else None
        )
        interval = stage_interval(
            [s.cycles_estimated for s in steps[:k]],
            [head.cycles_estimated, *(s.cycles_estimated for s in steps[k + 1 :])],
            wraps,
        )
        if best is None or interval < best[0]:
            best = (interval, k, head, wraps)
    if best is None:
        return plan.noted(
            "pipeline_stages: no split into stages on disjoint engines; one image at a time"
        )
    interval, k, head, wraps = best
    steps = (*steps[:k], head, *steps[k + 1 :])
    note = "" if wraps is None else f"; the next image's pixels load during step {k - 1}"
    return plan.noted(
        f"pipeline_stages: steps 0-{k - 1} then {k}-{len(steps) - 1}, interval {interval} cycles"
        + note,
        steps=steps,
        split=k,
        stage_period=wraps,
    )


PASSES: tuple[Callable[[Plan], Plan], ...] = (
    check_supported,
    fuse_steps,
    place_activations,
    assign_engines,
    chain_steps,
    size_engines,
    check_fits,
    place_weights,
    estimate_cycles,
    pipeline_stages,
)


def top_params(plan: Plan) -> TopParams:
    """The frozen parameters the top level (:class:`~squeezeforge.hw.top.Top`) is built from."""
    return TopParams(
        act_bits=plan.act_bits,
        split=plan.split,
        prefetch=plan.stage_period is not None,
        steps=tuple(
            TopStep(
                s.engine,
                s.in_count,
                s.out_count,
                s.cfg,
                in_segments=s.in_segments,
                out_address=s.out_address,
                from_pixels=s.from_pixels,
                to_scores=s.to_scores,
                chained=s.chained,
            )
            for s in plan.steps
        ),
        engines=tuple(
            TopEngine(name, binding, plan.params[name], plan.images[name])
            for name, binding in plan.engines.items()
        ),
    )


def compile_net(
    net: Net, target: Target | None = None, passes: Sequence[Callable[[Plan], Plan]] = PASSES
) -> Plan:
    """Run every pass for ``target`` (the default Target when None); ``passes`` replaces the
    list (``codegen.folding.FOLD_PASSES`` sizes the engines from the Target's budget first)."""
    plan = Plan.start(net, target)
    for p in passes:
        plan = p(plan)
    return plan
