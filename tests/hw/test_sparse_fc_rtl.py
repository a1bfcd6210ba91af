"""RTL tier of the sparse FC unit: cocotb on Verilator, one build per PE count and weight kind,
many layers per build (random ones and corner cases), outputs equal to the reference and cycles
equal to the cycle model."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from squeezeforge.hw.interface import pack_cfg
from squeezeforge.hw.sparse_fc import (
    SparseFC,
    SparseFCParams,
    load_writes,
    sparse_fc_config,
    sparse_fc_cycles,
    sparse_fc_memory_images,
)
from squeezeforge.sim.ir import SparseDense
from squeezeforge.sim.random_layers import (
    random_activations,
    random_sparse_dense,
    random_stored_weights,
)
from squeezeforge.sim.reference import run_layer
from squeezeforge.sim.rtl import RtlResult, amaranth_to_verilog, build_verilog, run_cocotb

BENCH_DIR = Path(__file__).parent
BENCH = "_sparse_fc_bench"
TOP = "sparse_fc"
BUILD_ROOT = Path(__file__).resolve().parents[2] / "build" / "rtl"
ACT_BITS = 8
# The cycle model is exact for this unit; the bench accepts no deviation at all (the
# requirement, 2 %, holds a fortiori).
CYCLE_TOLERANCE = 0.0

# One Verilator build each: every PE count of the issue and both EIE weight kinds, with FIFO
# depths and relative-index widths varied so the cycle model and the padding entries are
# exercised in several shapes.
BUILDS: dict[str, dict] = {
    "n1_codebook": dict(n_pe=1, weight_kind="codebook", fifo_depth=8, index_bits=4),
    "n2_pow2": dict(n_pe=2, weight_kind="pow2", fifo_depth=1, index_bits=2),
    "n4_pow2": dict(n_pe=4, weight_kind="pow2", fifo_depth=2, index_bits=3),
    "n8_codebook": dict(n_pe=8, weight_kind="codebook", fifo_depth=8, index_bits=4),
}


def build_params(tag: str) -> SparseFCParams:
    spec = BUILDS[tag]
    kind = spec["weight_kind"]
    return SparseFCParams(
        act_bits=ACT_BITS,
        weight_bits=4 if kind == "codebook" else 6,
        codebook_value_bits=16,
        acc_bits=40,
        bias_bits=26,
        ptr_depth=260,
        entry_depth=4160,
        acc_depth=64 if spec["n_pe"] < 8 else 32,
        **spec,
    )


_builds: dict[str, Path] = {}


def built(tag: str) -> tuple[SparseFCParams, Path]:
    """The Verilator build of one configuration (made once per session, cached on disk)."""
    params = build_params(tag)
    if tag not in _builds:
        verilog = amaranth_to_verilog(SparseFC(params), TOP)
        _builds[tag] = build_verilog(verilog, TOP, BUILD_ROOT / f"sparse_fc_{tag}")
    return params, _builds[tag]


# Cases -------------------------------------------------------------------------------------


def case_entry(
    params: SparseFCParams,
    layer: SparseDense,
    x: np.ndarray,
    *,
    valid_prob: float = 1.0,
    ready_prob: float = 1.0,
) -> dict:
    cfg = sparse_fc_config(layer, params)
    writes = load_writes(sparse_fc_memory_images(layer, params), params)
    model = sparse_fc_cycles(
        layer, x, n_pe=params.n_pe, index_bits=params.index_bits, fifo_depth=params.fifo_depth
    )
    return {
        "name": layer.name,
        "cfg": pack_cfg(params.cfg_layout(), cfg),
        "writes": writes.tolist(),
        "x": [int(v) for v in x],
        "expected": [int(v) for v in run_layer(layer, x[None])[0]],
        "cycles": model.cycles,
        "valid_prob": valid_prob,
        "ready_prob": ready_prob,
    }


def _layer(rng, params: SparseFCParams, name: str, **kw) -> SparseDense:
    kind = params.weight_kind
    args = dict(
        kind=kind,
        act_bits=int(rng.integers(2, ACT_BITS + 1)),
        weight_bits=int(rng.integers(1, 5)) if kind == "codebook" else int(rng.integers(2, 7)),
        name=name,
    )
    args.update(kw)
    return random_sparse_dense(rng, **args)


def _with_weights(layer: SparseDense, stored: np.ndarray, params: SparseFCParams) -> SparseDense:
    return SparseDense.from_dense(
        stored,
        name=layer.name,
        input_format=layer.input_format,
        weight_format=layer.weight_format,
        output_format=layer.output_format,
        relu=layer.relu,
        clamp_max=layer.clamp_max,
        bias=layer.bias,
    )


def corner_cases(rng, params: SparseFCParams) -> list[dict]:
    n = params.n_pe
    max_out = params.max_out_features
    cases = []

    def acts(layer, density=1.0):
        return random_activations(rng, layer.input_format, (layer.in_features,), density=density)

    layer = _layer(rng, params, "all_zero_input", in_features=23, out_features=17, density=0.5)
    cases.append(case_entry(params, layer, np.zeros(23, dtype=np.int64)))

    # Empty columns: every other column has no weight, and the input hits them all.
    base = _layer(rng, params, "empty_columns", in_features=20, out_features=19, density=0.6)
    stored = base.stored_dense()
    stored[:, ::2] = 0
    layer = _with_weights(base, stored, params)
    cases.append(case_entry(params, layer, acts(layer)))

    # Gaps longer than the relative index allows: first and last local row of every PE.
    rows = min(max_out, n * (3 << params.index_bits))
    base = _layer(rng, params, "padding_entries", in_features=7, out_features=rows, density=0)
    full = random_stored_weights(rng, base.weight_format, (rows, 7), density=1.0)
    stored = np.zeros_like(full)
    stored[:n] = full[:n]
    stored[-n:] = full[-n:]
    layer = _with_weights(base, stored, params)
    csc = layer.csc(params.n_pe, params.index_bits)
    assert np.any((csc.v == 0) & (csc.z == params.max_gap)), "no padding entry drawn"
    cases.append(case_entry(params, layer, acts(layer)))

    layer = _layer(
        rng,
        params,
        "fewer_outputs_than_pes",
        in_features=9,
        out_features=max(1, n // 2 - 1),
        density=0.8,
    )
    cases.append(case_entry(params, layer, acts(layer)))

    base = _layer(rng, params, "single_nonzero_row", in_features=16, out_features=13, density=0)
    stored = np.zeros((13, 16), dtype=np.int64)
    stored[5] = random_stored_weights(rng, base.weight_format, (16,), density=1.0)
    layer = _with_weights(base, stored, params)
    cases.append(case_entry(params, layer, acts(layer)))

    layer = _layer(rng, params, "one_by_one", in_features=1, out_features=1, density=1.0)
    cases.append(case_entry(params, layer, acts(layer)))

    layer = _layer(
        rng, params, "extreme", in_features=12, out_features=10, extreme=True, act_bits=ACT_BITS
    )
    x = random_activations(rng, layer.input_format, (12,), extreme=True)
    cases.append(case_entry(params, layer, x))

    layer = _layer(
        rng, params, "backpressure", in_features=30, out_features=min(max_out, 40), density=0.5
    )
    cases.append(case_entry(params, layer, acts(layer, 0.6), valid_prob=0.7, ready_prob=0.5))

    # Clamps after the ReLU: to half the largest unclamped output (it cuts), to zero, and to the
    # output maximum (the saturation bound itself).
    base = _layer(rng, params, "clamp", in_features=20, out_features=15, density=0.7, relu=True)
    x = acts(base)
    top = int(run_layer(base, x[None]).max())
    for name, bound in (("half", top // 2), ("zero", 0), ("max", base.output_format.max)):
        layer = replace(base, name=f"clamp_{name}", clamp_max=bound)
        cases.append(case_entry(params, layer, x))
    return cases


def random_cases(rng, params: SparseFCParams, count: int, *, clamp: bool = False) -> list[dict]:
    cases = []
    densities = np.linspace(0.01, 1.0, count)
    act_densities = np.linspace(0.0, 1.0, count)
    rng.shuffle(act_densities)
    for i in range(count):
        layer = _layer(
            rng,
            params,
            f"random{i}",
            in_features=int(rng.integers(1, 65)),
            out_features=int(rng.integers(1, min(params.max_out_features, 64) + 1)),
            density=float(densities[i]),
            **({"clamp": True} if clamp else {}),
        )
        x = random_activations(
            rng, layer.input_format, (layer.in_features,), density=float(act_densities[i])
        )
        cases.append(case_entry(params, layer, x))
    return cases


def run_cases(tag: str, layers: list[dict], tmp_path: Path, **extra) -> RtlResult:
    params, build = built(tag)
    path = tmp_path / f"{tag}.json"
    path.write_text(
        json.dumps(
            {"act_bits": params.act_bits, "tolerance": CYCLE_TOLERANCE, "layers": layers, **extra}
        )
    )
    return run_cocotb(build, TOP, BENCH, BENCH_DIR, extra_env={"SPARSE_FC_CASES": str(path)})


# Tests -------------------------------------------------------------------------------------


@pytest.mark.rtl
@pytest.mark.parametrize("tag", list(BUILDS))
def test_layers_match_reference_and_cycle_model(tag: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(sorted(BUILDS).index(tag) + 100)
    params = build_params(tag)
    layers = random_cases(rng, params, 16) + corner_cases(rng, params)
    result = run_cases(tag, layers, tmp_path, seed=3)
    result.check()
    assert result.passed


@pytest.mark.rtl
@pytest.mark.parametrize("tag", ["n2_pow2", "n8_codebook"])
def test_clamped_layers_match_reference_and_cycle_model(tag: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(sorted(BUILDS).index(tag) + 200)
    params = build_params(tag)
    result = run_cases(tag, random_cases(rng, params, 10, clamp=True), tmp_path, seed=4)
    result.check()
    assert result.passed


EIE_SHAPES = {
    # name: (in, out, weight density, activation density), EIE's layers scaled to 256 inputs
    "alex7": (256, 256, 0.09, 0.353),
    "vgg7": (256, 256, 0.04, 0.375),
    "ntwe": (256, 40, 0.10, 1.0),
}


@pytest.mark.rtl
def test_eie_shaped_layers_match_cycle_model(tmp_path: Path) -> None:
    """The cycle model of the load-balance study against RTL, one layer of each EIE shape."""
    params, _ = built("n8_codebook")
    rng = np.random.default_rng(2016)
    layers = []
    for name, (fi, fo, wd, ad) in EIE_SHAPES.items():
        layer = _layer(
            rng, params, name, in_features=fi, out_features=fo, density=wd, weight_bits=4
        )
        x = random_activations(rng, layer.input_format, (fi,), density=ad)
        layers.append(case_entry(params, layer, x))
    run_cases("n8_codebook", layers, tmp_path).check()


@pytest.mark.rtl
def test_corrupted_golden_fails(tmp_path: Path) -> None:
    """The scoreboard is live: a wrong expected output, or a wrong cycle count, fails the run."""
    params, _ = built("n2_pow2")
    rng = np.random.default_rng(5)
    good = []
    for i in range(2):
        layer = _layer(rng, params, f"layer{i}", in_features=12, out_features=9, density=0.5)
        good.append(case_entry(params, layer, random_activations(rng, layer.input_format, (12,))))
    run_cases("n2_pow2", good, tmp_path).check()

    bad_output = json.loads(json.dumps(good))
    bad_output[1]["expected"][3] += 1
    result = run_cases("n2_pow2", bad_output, tmp_path)
    with pytest.raises(AssertionError, match=r"layer layer1, row 3: expected -?\d+, got -?\d+"):
        result.check()

    bad_cycles = json.loads(json.dumps(good))
    bad_cycles[0]["cycles"] += 5
    result = run_cases("n2_pow2", bad_cycles, tmp_path)
    with pytest.raises(AssertionError, match="cycles measured, the cycle model says"):
        result.check()
