"""Random layers and nets within the numeric contract, for tests and benchmarks.

Every test tier (reference, Amaranth, cocotb) draws its cases from here, so they all exercise
the same corners: widths 2..16, all three weight formats, extreme values.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .ir import Add, Concat, Conv2d, Dense, Flatten, MaxPool2d, Net, SparseDense
from .numerics import (
    ADD_MAX_ALIGN,
    CodebookWeights,
    FixedFormat,
    FixedWeights,
    Pow2Weights,
    WeightFormat,
    int_range,
)

__all__ = [
    "random_activations",
    "random_conv2d",
    "random_dense",
    "random_graph_net",
    "random_net",
    "random_sparse_dense",
    "random_stored_weights",
    "random_weight_format",
]

WeightKind = Literal["fixed", "pow2", "codebook"]


def random_weight_format(
    rng: np.random.Generator, kind: WeightKind, bits: int | None = None
) -> WeightFormat:
    if kind == "fixed":
        b = bits or int(rng.integers(2, 17))
        return FixedWeights(bits=b, frac=int(rng.integers(0, b + 2)))
    if kind == "pow2":
        b = bits or int(rng.integers(2, 7))
        n1 = int(rng.integers(-3, 1))
        return Pow2Weights(bits=b, n1=n1, n2=n1 + 1 - (1 << (b - 1)) // 2)
    if kind == "codebook":
        k = bits or int(rng.integers(1, 5))
        vb = int(rng.integers(2, 17))
        lo, hi = int_range(vb)
        table = (0, *(int(t) for t in rng.integers(lo, hi + 1, size=(1 << k) - 1)))
        return CodebookWeights(
            index_bits=k, value_bits=vb, frac=int(rng.integers(0, vb)), table=table
        )
    raise ValueError(f"unknown weight kind {kind!r}")


def random_stored_weights(
    rng: np.random.Generator,
    fmt: WeightFormat,
    shape: tuple[int, ...],
    density: float = 1.0,
    extreme: bool = False,
) -> np.ndarray:
    """Stored weights of ``fmt``; ``extreme`` uses only the most negative value."""
    if isinstance(fmt, CodebookWeights):
        if extreme:
            table = np.asarray(fmt.table)
            stored = np.full(shape, int(np.argmin(table)))
        else:
            stored = rng.integers(0, len(fmt.table), size=shape)
    elif isinstance(fmt, Pow2Weights):
        if extreme:
            stored = np.full(shape, -(1 << fmt.max_shift))
        else:
            sh = rng.integers(0, fmt.max_shift + 1, size=shape)
            sign = rng.choice([-1, 1], size=shape)
            stored = sign * (1 << sh)
    else:
        lo, hi = fmt.value_range
        stored = np.full(shape, lo) if extreme else rng.integers(lo, hi + 1, size=shape)
    keep = rng.random(shape) < density
    return np.where(keep, stored, 0).astype(np.int64)


def random_activations(
    rng: np.random.Generator,
    fmt: FixedFormat,
    shape: tuple[int, ...],
    density: float = 1.0,
    extreme: bool = False,
) -> np.ndarray:
    x = np.full(shape, fmt.min) if extreme else rng.integers(fmt.min, fmt.max + 1, size=shape)
    return np.where(rng.random(shape) < density, x, 0).astype(np.int64)


def _formats(
    rng: np.random.Generator,
    kind: WeightKind,
    act_bits: int | None,
    weight_bits: int | None,
) -> tuple[FixedFormat, WeightFormat, FixedFormat]:
    ab = act_bits or int(rng.integers(2, 17))
    inp = FixedFormat(bits=ab, frac=int(rng.integers(0, ab + 1)))
    wf = random_weight_format(rng, kind, weight_bits)
    ob = act_bits or int(rng.integers(2, 17))
    acc_frac = inp.frac + wf.frac
    out = FixedFormat(bits=ob, frac=int(rng.integers(max(acc_frac - 20, -4), acc_frac + 1)))
    return inp, wf, out


def _relu_and_clamp(
    rng: np.random.Generator, out: FixedFormat, relu: bool | None, clamp: bool
) -> tuple[bool, int | None]:
    """ReLU (random unless given) and, when ``clamp``, a ``clamp_max`` after it: 0, ``out.max``
    or a value between, a third of the time each. Without ``clamp`` nothing more is drawn, so a
    seed gives the layers it gave before."""
    if not clamp:
        return (bool(rng.integers(0, 2)) if relu is None else relu), None
    picks = (0, out.max, int(rng.integers(0, out.max + 1)))
    return (True if relu is None else relu), picks[int(rng.integers(0, 3))]


def _bias(rng: np.random.Generator, layer_bias_bits: int, n: int, extreme: bool) -> np.ndarray:
    lo, hi = int_range(layer_bias_bits)
    return np.full(n, lo) if extreme else rng.integers(lo, hi + 1, size=n)


def random_conv2d(
    rng: np.random.Generator,
    *,
    kind: WeightKind = "fixed",
    in_channels: int | None = None,
    out_channels: int | None = None,
    kernel: tuple[int, int] | None = None,
    stride: int | None = None,
    padding: int | None = None,
    act_bits: int | None = None,
    weight_bits: int | None = None,
    density: float = 1.0,
    extreme: bool = False,
    relu: bool | None = None,
    name: str = "conv",
    groups: int = 1,
    clamp: bool = False,
) -> Conv2d:
    """A random conv layer; ``clamp`` gives it a random ``clamp_max`` (and a ReLU)."""
    inp, wf, out = _formats(rng, kind, act_bits, weight_bits)
    c = in_channels or int(rng.integers(1, 5))
    m = out_channels or int(rng.integers(1, 6))
    k = kernel or (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    stride = stride or int(rng.integers(1, 3))
    padding = int(rng.integers(0, 2)) if padding is None else padding
    use_relu, clamp_max = _relu_and_clamp(rng, out, relu, clamp)
    probe = Conv2d(
        name=name,
        in_channels=c,
        out_channels=m,
        kernel=k,
        stride=stride,
        padding=padding,
        input_format=inp,
        weight_format=wf,
        output_format=out,
        relu=use_relu,
        clamp_max=clamp_max,
        weight=np.zeros((m, c // groups, *k), dtype=np.int64),
        bias=np.zeros(m, dtype=np.int64),
        groups=groups,
    )
    return Conv2d(
        **{
            **probe.__dict__,
            "weight": random_stored_weights(rng, wf, (m, c // groups, *k), density, extreme),
            "bias": _bias(rng, probe.bias_bits, m, extreme),
        }
    )


def random_dense(
    rng: np.random.Generator,
    *,
    kind: WeightKind = "fixed",
    in_features: int | None = None,
    out_features: int | None = None,
    act_bits: int | None = None,
    weight_bits: int | None = None,
    density: float = 1.0,
    extreme: bool = False,
    relu: bool | None = None,
    name: str = "fc",
    clamp: bool = False,
) -> Dense:
    """A random dense layer; ``clamp`` gives it a random ``clamp_max`` (and a ReLU)."""
    inp, wf, out = _formats(rng, kind, act_bits, weight_bits)
    fi = in_features or int(rng.integers(1, 40))
    fo = out_features or int(rng.integers(1, 20))
    use_relu, clamp_max = _relu_and_clamp(rng, out, relu, clamp)
    probe = Dense(
        name=name,
        in_features=fi,
        out_features=fo,
        input_format=inp,
        weight_format=wf,
        output_format=out,
        relu=use_relu,
        clamp_max=clamp_max,
        weight=np.zeros((fo, fi), dtype=np.int64),
        bias=np.zeros(fo, dtype=np.int64),
    )
    return Dense(
        **{
            **probe.__dict__,
            "weight": random_stored_weights(rng, wf, (fo, fi), density, extreme),
            "bias": _bias(rng, probe.bias_bits, fo, extreme),
        }
    )


def random_sparse_dense(
    rng: np.random.Generator,
    *,
    density: float = 0.2,
    **kw,
) -> SparseDense:
    """A random sparse dense layer (``kind`` may be ``pow2`` or ``codebook`` or ``fixed``;
    ``clamp`` as in :func:`random_dense`)."""
    d = random_dense(rng, density=density, **kw)
    return SparseDense.from_dense(
        d.weight,
        name=d.name,
        input_format=d.input_format,
        weight_format=d.weight_format,
        output_format=d.output_format,
        relu=d.relu,
        clamp_max=d.clamp_max,
        bias=d.bias,
    )


def random_net(rng: np.random.Generator, n_tests: int = 4, kind: WeightKind = "fixed") -> Net:
    """A small conv, pool, flatten, dense, sparse-dense net with chained formats."""
    from .reference import run_net

    inp = FixedFormat(8, 4)
    a = FixedFormat(8, 3)
    conv = random_conv2d(
        rng,
        kind=kind,
        in_channels=1,
        out_channels=3,
        kernel=(3, 3),
        stride=1,
        padding=1,
        act_bits=8,
        relu=True,
        name="conv1",
    )
    conv = Conv2d(**{**conv.__dict__, "input_format": inp, "output_format": a})
    fc = random_dense(rng, kind=kind, in_features=27, out_features=12, act_bits=8, name="fc1")
    fc = Dense(**{**fc.__dict__, "input_format": a, "output_format": a, "relu": True})
    sp = random_sparse_dense(
        rng,
        kind="codebook",
        in_features=12,
        out_features=5,
        act_bits=8,
        name="fc2",
        density=0.4,
    )
    sp = SparseDense(**{**sp.__dict__, "input_format": a, "output_format": FixedFormat(8, 0)})
    layers = (conv, MaxPool2d("pool1"), Flatten("flatten"), fc, sp)
    x = random_activations(rng, inp, (n_tests, 1, 6, 6))
    probe = Net(
        "random",
        (1, 6, 6),
        inp,
        layers,
        x,
        np.zeros(n_tests, np.int64),
        np.zeros((n_tests, 5), np.int64),
    )
    return probe.replace(test_outputs=run_net(probe, x))


def random_graph_net(
    rng: np.random.Generator,
    n_tests: int = 4,
    *,
    channels: int | None = None,
    size: int | None = None,
    act_bits: int = 8,
) -> Net:
    """A small graph with a residual block and a fire module: stem conv, two convs, an add of
    the stem and the second conv, two expand convs (1x1 and 3x3) joined by a concat, then a
    dense layer. Each output's fraction length is calibrated on the test inputs (the widest
    that holds the largest sum, sometimes one more so a few values saturate), so the tensors
    carry information and the add aligns different fraction lengths."""
    from .reference import conv2d_acc, dense_acc, run_layer, run_net

    c = channels or int(rng.integers(1, 4))
    e = int(rng.integers(1, 4))
    hw = size or int(rng.integers(3, 6))
    f_in = FixedFormat(act_bits, int(rng.integers(1, act_bits)))
    x = random_activations(rng, f_in, (n_tests, 1, hw, hw))

    def out_frac(acc: np.ndarray, acc_frac: int) -> int:
        top = int(np.abs(acc).max(initial=0)).bit_length()
        return acc_frac - max(0, top - (act_bits - 1)) + int(rng.integers(0, 2))

    def conv(
        name: str, cin: int, cout: int, k: int, fin: FixedFormat, relu: bool, inputs=()
    ) -> Conv2d:
        layer = random_conv2d(
            rng,
            in_channels=cin,
            out_channels=cout,
            kernel=(k, k),
            stride=1,
            padding=k // 2,
            act_bits=act_bits,
            weight_bits=int(rng.integers(3, 9)),
            relu=relu,
            name=name,
        )
        wf = FixedWeights(layer.weight_format.bits, int(rng.integers(0, 4)))
        return Conv2d(
            **{
                **layer.__dict__,
                "input_format": fin,
                "weight_format": wf,
                "output_format": FixedFormat(act_bits, fin.frac + wf.frac),
                "inputs": inputs,
            }
        )

    def calibrated(layer: Conv2d, x_in: np.ndarray, frac: int | None = None) -> Conv2d:
        if frac is None:
            frac = out_frac(conv2d_acc(layer, x_in), layer.acc_frac)
        frac = min(frac, layer.acc_frac)  # requantization shifts right only
        return Conv2d(**{**layer.__dict__, "output_format": FixedFormat(act_bits, frac)})

    stem = calibrated(conv("stem", 1, c, 3, f_in, True), x)
    t_stem = run_layer(stem, x)
    b1 = calibrated(conv("b1", c, c, 3, stem.output_format, True), t_stem)
    t_b1 = run_layer(b1, t_stem)
    b2 = calibrated(conv("b2", c, c, 3, b1.output_format, False), t_b1)
    if stem.output_format.frac - b2.output_format.frac > ADD_MAX_ALIGN:
        b2 = calibrated(b2, t_b1, stem.output_format.frac - ADD_MAX_ALIGN)
    t_b2 = run_layer(b2, t_b1)
    fa, fb = stem.output_format.frac, b2.output_format.frac
    m = max(fa, fb)
    total = (t_stem << (m - fa)) + (t_b2 << (m - fb))
    res = Add(
        "res",
        ("stem", "b2"),
        FixedFormat(act_bits, out_frac(total, m)),
        relu=bool(rng.integers(0, 2)),
    )
    t_res = run_layer(
        res.as_conv(stem.output_format, b2.output_format, c),
        np.concatenate([t_stem, t_b2], axis=1),
    )
    e1 = conv("e1", c, e, 1, res.format, True)
    e3 = conv("e3", c, e, 3, res.format, True, inputs=("res",))
    # A concat's inputs share one format: the narrower of the two calibrations.
    f_cat = min(calibrated(e1, t_res).output_format.frac, calibrated(e3, t_res).output_format.frac)
    e1, e3 = calibrated(e1, t_res, f_cat), calibrated(e3, t_res, f_cat)
    f_cat = min(e1.output_format.frac, e3.output_format.frac)
    e1, e3 = calibrated(e1, t_res, f_cat), calibrated(e3, t_res, f_cat)
    fc = random_dense(
        rng,
        in_features=2 * e * hw * hw,
        out_features=3,
        act_bits=act_bits,
        weight_bits=8,
        relu=False,
        name="fc",
    )
    cat_fmt = e1.output_format
    fc = Dense(**{**fc.__dict__, "input_format": cat_fmt, "output_format": cat_fmt})
    t_cat = np.concatenate([run_layer(e1, t_res), run_layer(e3, t_res)], axis=1)
    frac = min(out_frac(dense_acc(fc, t_cat.reshape(n_tests, -1)), fc.acc_frac), fc.acc_frac)
    fc = Dense(**{**fc.__dict__, "output_format": FixedFormat(act_bits, frac)})
    layers = (stem, b1, b2, res, e1, e3, Concat("cat", ("e1", "e3")), Flatten("flatten"), fc)
    probe = Net(
        "random-graph",
        (1, hw, hw),
        f_in,
        layers,
        x,
        np.zeros(n_tests, np.int64),
        np.zeros((n_tests, 3), np.int64),
    )
    return probe.replace(test_outputs=run_net(probe, x))
