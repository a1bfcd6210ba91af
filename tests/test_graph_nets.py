"""Nets that are graphs (residual adds, concats) on the hardware: activation layout, refusals,
and RTL bit-exact against the reference with cycles as estimated."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from squeezeforge.codegen.build import write_build
from squeezeforge.codegen.plan import compile_net, top_params
from squeezeforge.sim.ir import NET_INPUT, Add, Concat, Flatten, IRError, MaxPool2d
from squeezeforge.sim.netsim import simulate
from squeezeforge.sim.numerics import FixedFormat
from squeezeforge.sim.random_layers import random_dense, random_graph_net, random_net


def _run_layout(plan) -> None:
    """Play the plan's memory layout with a tag per value instead of the value: every word a
    step reads must be the word of its input that the graph says, so no tensor was overwritten
    while still needed, and the scores must be the net's output, in order."""
    net = plan.net
    tags: dict[str, np.ndarray] = {NET_INPUT: np.arange(int(np.prod(net.input_shape)))}
    fresh = len(tags[NET_INPUT])
    for k, layer in enumerate(net.layers):
        srcs = net.sources(k)
        if isinstance(layer, Flatten | Concat):  # views of the tensors under them
            tags[layer.name] = np.concatenate([tags[src] for src in srcs])
        else:
            size = int(np.prod(net.tensor_shapes()[layer.name]))
            tags[layer.name] = np.arange(fresh, fresh + size)
            fresh += size
    memory: dict[int, int] = {}
    pixels = list(tags[NET_INPUT])
    scores: list[int] = []
    depth = top_params(plan).memory_depth
    for s in plan.steps:
        want = np.concatenate([tags[src] for src in s.sources])[
            s.in_offset : s.in_offset + s.in_count
        ]
        if s.from_pixels:
            got, pixels = pixels[: s.in_count], pixels[s.in_count :]
        else:
            got = [memory.get(a) for start, n in s.in_segments for a in range(start, start + n)]
        assert list(want) == got, (s.layers, s.in_segments)
        out = tags[s.output][s.out_offset : s.out_offset + s.out_count]
        if s.to_scores:
            scores.extend(out)
        else:
            assert s.out_address + s.out_count <= depth
            memory.update(zip(range(s.out_address, s.out_address + s.out_count), out, strict=True))
    assert scores == list(tags[net.layers[-1].name]) and not pixels


@pytest.mark.parametrize("seed", range(12))
def test_every_step_reads_what_the_graph_says(seed: int) -> None:
    plan = compile_net(random_graph_net(np.random.default_rng(seed), n_tests=2))
    _run_layout(plan)
    # The add reads its two inputs, the dense layer the concat's two parts: two segments each.
    by_name = {s.layers[0]: s for s in plan.steps}
    assert len(by_name["res"].in_segments) == 2 and len(by_name["fc"].in_segments) == 2
    assert by_name["stem"].from_pixels and by_name["fc"].to_scores


@pytest.mark.parametrize("seed", range(4))
def test_stacks_still_lay_out_correctly(seed: int) -> None:
    _run_layout(compile_net(random_net(np.random.default_rng(seed), n_tests=2)))


def test_the_layout_check_fails_on_a_clobbered_tensor() -> None:
    plan = compile_net(random_graph_net(np.random.default_rng(0), n_tests=2))
    # b2 written over the stem, which the add still reads after b2.
    steps = list(plan.steps)
    k = next(i for i, s in enumerate(steps) if s.layers == ("b2",))
    stem = next(s for s in steps if s.layers == ("stem",))
    steps[k] = replace(steps[k], out_address=stem.out_address)
    with pytest.raises(AssertionError):
        _run_layout(replace(plan, steps=tuple(steps)))


def _edit(net, index: int, **changes):
    layers = list(net.layers)
    layers[index] = replace(layers[index], **changes)
    return net.replace(layers=tuple(layers))


def test_an_input_read_twice_is_refused() -> None:
    net = random_graph_net(np.random.default_rng(1), channels=1, n_tests=1)
    twice = _edit(net, 1, inputs=(NET_INPUT,), input_format=net.input_format)
    with pytest.raises(IRError, match="'b1', field 'inputs': the hardware streams the net's input"):
        compile_net(twice)


def test_a_max_pool_fuses_only_into_its_only_reader() -> None:
    rng = np.random.default_rng(2)
    net = random_graph_net(rng, channels=2, size=4, n_tests=1)
    stem = net.layers[0]
    f = stem.output_format
    b1 = replace(net.layers[1], output_format=f, relu=True)
    fc = random_dense(rng, in_features=2 * 2 * 2 + 2 * 4 * 4, out_features=3, act_bits=8)
    layers = (
        stem,
        MaxPool2d("pool", inputs=("stem",)),
        replace(b1, inputs=("stem",)),
        Flatten("fp", inputs=("pool",)),
        Flatten("fb", inputs=("b1",)),
        Concat("cat", ("fp", "fb")),
        replace(fc, input_format=f, output_format=FixedFormat(8, f.frac)),
    )
    graph = net.replace(layers=layers, test_outputs=np.zeros((1, 3), np.int64))
    with pytest.raises(IRError, match="'pool', field 'kind': a max pool must follow the conv"):
        compile_net(graph)
    # The same pool as the stem's only reader fuses.
    chain = graph.replace(
        layers=(
            stem,
            MaxPool2d("pool"),
            Flatten("fp"),
            replace(layers[-1], in_features=8, weight=layers[-1].weight[:, :8]),
        )
    )
    assert compile_net(chain).steps[0].layers == ("stem", "pool")


def test_an_add_of_flat_tensors_is_refused() -> None:
    net = random_graph_net(np.random.default_rng(3), n_tests=1)
    fc = net.layers[-1]
    layers = (
        *net.layers[:-1],
        Add("late", ("flatten", "flatten"), net.tensor_formats()["cat"]),
        replace(fc, inputs=("late",)),
    )
    with pytest.raises(IRError, match="'late', field 'kind': an add of flat tensors has no"):
        compile_net(net.replace(layers=layers))


IMAGES = 3


@pytest.mark.rtl
def test_graph_on_rtl_bit_exact_cycles_exact_and_a_bad_add_located(tmp_path: Path) -> None:
    """A residual block and a fire module on the RTL: every score equals the reference, every
    step takes the estimated cycles; a wrong weight in the add's conv is found at the add."""
    net = random_graph_net(np.random.default_rng(7), n_tests=IMAGES)
    plan = compile_net(net)
    write_build(plan, tmp_path / "b")
    report = simulate(tmp_path / "b", IMAGES)
    assert report["bit_exact"] == IMAGES and report["golden_consistent"]
    # A conv step's schedule does not depend on the data; an FC step's does (zeros are
    # skipped), and its estimate is the rounded mean over these same images.
    for s, measured in zip(plan.steps, report["steps"], strict=True):
        if s.engine.startswith("conv"):
            assert measured["cycles_measured"] == s.cycles_estimated, s.layers
        else:
            assert abs(measured["cycles_measured"] - s.cycles_estimated) <= 0.5, s.layers

    step = next(s for s in plan.steps if s.layers == ("res",))
    image = dict(plan.images[step.engine])
    words = list(image["weight"])
    # Bit 0 of filter 0's weight on every input channel: 1 -> 0 on the stem's channel 0,
    # 2**e -> 2**e + 1 on b2's (a word holds one weight per array column, filter 0 lowest).
    for j in range(step.layer.in_channels):
        words[step.cfg["weight_base"] + j] ^= 1
    bad = replace(plan, images={**plan.images, step.engine: {**image, "weight": words}})
    write_build(bad, tmp_path / "bad")
    report = simulate(tmp_path / "bad", IMAGES)
    assert report["bit_exact"] < IMAGES
    assert report["first_mismatch"]["first_bad_layer"] == "res"
