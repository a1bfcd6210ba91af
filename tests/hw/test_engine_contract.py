"""Every engine behind the one contract: sizing, fits, placement, cycles, storage and build."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest
from amaranth.hdl import Fragment

from squeezeforge.hw.conv import ConvBinding, ConvEngine, conv_cycles
from squeezeforge.hw.conv.engine import OutputEmitter
from squeezeforge.hw.engine import EngineBinding
from squeezeforge.hw.interface import pack_cfg
from squeezeforge.hw.sparse_fc import (
    SparseFC,
    SparseFCBinding,
    SparseFCParams,
    as_csc,
    sparse_fc_cycles,
)
from squeezeforge.sim.ir import busiest_pe_entries, encode_csc
from squeezeforge.sim.numerics import Pow2Weights, pow2_encode, pow2_max_shift
from squeezeforge.sim.random_layers import random_conv2d, random_dense, random_sparse_dense


@dataclass(frozen=True)
class _Step:
    layer: Any
    in_shape: tuple[int, ...]
    pool: bool = False


def _act_bits(steps) -> int:
    # As the compiler sizes it: the widest activations of any step.
    return max(max(s.layer.input_format.bits, s.layer.output_format.bits) for s in steps)


def _conv_step(rng, kind: str) -> _Step:
    layer = random_conv2d(rng, kind=kind, kernel=(3, 3), stride=1, padding=1)
    return _Step(layer, (layer.in_channels, 6, 6), pool=True)


def _fc_step(rng, kind: str) -> _Step:
    layer = random_sparse_dense(rng, kind=kind)
    return _Step(layer, (layer.in_features,))


CASES = [
    (ConvBinding, "fixed", _conv_step),
    (ConvBinding, "pow2", _conv_step),
    (SparseFCBinding, "fixed", _fc_step),
    (SparseFCBinding, "pow2", _fc_step),
    (SparseFCBinding, "codebook", _fc_step),
]


@pytest.mark.parametrize(("engine", "kind", "make"), CASES)
def test_sized_engine_fits_places_and_builds(engine, kind, make) -> None:
    rng = np.random.default_rng(3)
    steps = [make(rng, kind), make(rng, kind)]
    binding = engine.for_layer(steps[0].layer)
    assert isinstance(binding, EngineBinding) and binding.weight_kind == kind
    params = binding.size(steps, _act_bits(steps))
    assert all(binding.fits(s, params) is None for s in steps)
    cfgs, images = binding.place(steps, params)
    assert len(cfgs) == 2
    # The second layer starts where the first ends in the memories the engine fills.
    assert any(cfgs[1][k] > 0 for k in cfgs[1] if k.endswith("_base"))
    # Memory contents live in the images, never in the parameters the manifest records.
    plain = binding.params_dict(params)
    assert not {"init", "init_weights", "init_biases"} & set(plain)
    component = binding.build(params, images)
    assert isinstance(component, ConvEngine | SparseFC)
    Fragment.get(component, None)  # elaborates with the images as initial contents
    x = rng.integers(-3, 4, size=(2, int(np.prod(steps[0].in_shape))))
    cycles, ideal = binding.cycles(steps[0], params, x)
    assert cycles > ideal > 0
    assert binding.storage_bytes(params) > 0


@pytest.mark.parametrize(("engine", "kind", "make"), CASES)
def test_a_layer_too_large_for_the_sized_engine_is_refused(engine, kind, make) -> None:
    rng = np.random.default_rng(4)
    small, big = make(rng, kind), make(rng, kind)
    binding = engine.for_layer(small.layer)
    params = binding.size([small], _act_bits([small, big]))
    wider = (
        replace(big, in_shape=(big.in_shape[0], 40, 40))
        if engine is ConvBinding
        else _Step(
            random_dense(rng, kind=kind, in_features=params.ptr_depth + 5, out_features=3),
            (params.ptr_depth + 5,),
        )
    )
    reason = binding.fits(wider, params)
    assert reason is not None and repr(wider.layer.name) in reason


def test_storage_bytes_count_every_weight_memory() -> None:
    conv = ConvBinding("fixed")
    step = _conv_step(np.random.default_rng(0), "fixed")
    params = conv.size([step], _act_bits([step]))
    bits = params.weight_depth * params.cols * params.weight_bits
    bits += params.bias_depth * params.cols * params.acc_bits
    assert conv.storage_bytes(params) == -(-bits // 8)
    fc = SparseFCBinding("codebook", n_pe=2)
    p = SparseFCParams(n_pe=2, weight_kind="codebook", weight_bits=4, index_bits=4)
    per_pe = p.ptr_depth * p.ptr_value_shape.width + p.entry_depth * 8
    per_pe += p.bias_memory_depth * p.bias_bits + 16 * p.codebook_value_bits
    assert fc.storage_bytes(p) == -(-(2 * per_pe) // 8)


def test_unsupported_kinds_name_the_reason() -> None:
    assert ConvBinding.unsupported("conv2d", "codebook") == ConvBinding.WHY_NOT
    assert ConvBinding.unsupported("conv2d", "pow2") is None
    # Not the engine's layer kind: not the engine's business.
    assert ConvBinding.unsupported("dense", "codebook") is None
    assert SparseFCBinding.unsupported("sparse_dense", "codebook") is None
    assert SparseFCBinding.unsupported("dense", "ternary") == SparseFCBinding.WHY_NOT


def test_cycle_models_read_the_components_latencies(monkeypatch) -> None:
    rng = np.random.default_rng(5)
    step = _conv_step(rng, "fixed")
    params = ConvBinding("fixed").size([step], _act_bits([step]))
    before = conv_cycles(step.layer, step.in_shape, params, pool=True).cycles
    monkeypatch.setattr(OutputEmitter, "READ_LATENCY", OutputEmitter.READ_LATENCY + 5)
    assert conv_cycles(step.layer, step.in_shape, params, pool=True).cycles == before + 5
    layer = random_sparse_dense(rng)
    x = np.ones(layer.in_features, dtype=np.int64)
    before = sparse_fc_cycles(layer, x, n_pe=4, index_bits=4).cycles
    monkeypatch.setattr(SparseFC, "OUTPUT_TAIL", SparseFC.OUTPUT_TAIL + 2)
    assert sparse_fc_cycles(layer, x, n_pe=4, index_bits=4).cycles == before + 2


@pytest.mark.parametrize("seed", range(4))
def test_one_busiest_pe_count_for_dense_and_encoded_layers(seed) -> None:
    rng = np.random.default_rng(seed)
    layer = random_sparse_dense(rng, density=0.1)
    for n_pe, index_bits in ((4, 2), (8, 1), (2, 4)):
        _, _, ptr = encode_csc(layer.weight, n_pe, index_bits)
        want = int(np.diff(ptr[:, [0, -1]], axis=1).max())
        assert busiest_pe_entries(layer, n_pe, index_bits) == want
        assert int(as_csc(layer, n_pe, index_bits).pe_entries.max()) == want
    # A count that ignored the padding rule would be short on a long gap.
    stored = np.zeros((4 * 40, 1), dtype=np.int64)
    stored[[0, 4 * 39], 0] = 1
    assert busiest_pe_entries(_dense_with(stored, rng), 4, 2) == 2 + 38 // 4


def _dense_with(stored: np.ndarray, rng) -> Any:
    d = random_dense(rng, in_features=stored.shape[1], out_features=stored.shape[0])
    return replace(d, weight=stored)


def test_pack_cfg_refuses_a_value_wider_than_its_field() -> None:
    p = SparseFCParams(n_pe=2, weight_kind="fixed", weight_bits=8, ptr_depth=16)
    cfg = dict(
        in_features=3,
        out_features=4,
        ptr_base=0,
        entry_base=0,
        bias_base=0,
        codebook_base=0,
        shift=5,
        out_bits=8,
        relu=1,
        clamp=1,
        clamp_max=96,
    )
    assert pack_cfg(p.cfg_layout(), cfg) == p.cfg_layout().const(cfg).as_value().value
    with pytest.raises(ValueError, match="cfg field 'in_features' = 16 does not fit 4 bits"):
        pack_cfg(p.cfg_layout(), {**cfg, "in_features": 16})


@pytest.mark.parametrize("bits", range(2, 7))
def test_engine_codes_are_the_numeric_contracts_pow2_codes(bits) -> None:
    # The engines encode at their own code width with the same encoder as the format.
    shift = pow2_max_shift(bits)
    fmt = Pow2Weights(bits=bits, n1=shift, n2=0)
    stored = np.array([0] + [s << e for e in range(shift + 1) for s in (1, -1)])
    assert np.array_equal(pow2_encode(stored, bits), pow2_encode(stored, fmt))
    assert (
        fmt.max_shift
        == shift
        == ConvBinding("pow2").size([_Step(_pow2_conv(bits), (1, 4, 4))], act_bits=8).max_shift
    )


def _pow2_conv(bits: int) -> Any:
    return random_conv2d(
        np.random.default_rng(bits),
        kind="pow2",
        weight_bits=bits,
        in_channels=1,
        kernel=(1, 1),
        stride=1,
        padding=0,
    )
