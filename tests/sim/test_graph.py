"""The net as a graph: residual add and concat in the IR, the numeric contract and the reference."""

from __future__ import annotations

import io
import json
import math
import zipfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from squeezeforge.sim.ir import (
    NET_INPUT,
    Add,
    Concat,
    IRError,
    load_net,
    net_to_bytes,
    save_net,
)
from squeezeforge.sim.numerics import ADD_MAX_ALIGN, FixedFormat, add_aligned
from squeezeforge.sim.random_layers import random_graph_net, random_net
from squeezeforge.sim.reference import run_layer, run_net


def _manifest(data: bytes) -> dict:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return json.loads(zf.read("manifest.json"))


@given(
    a=st.integers(-128, 127),
    b=st.integers(-128, 127),
    fa=st.integers(-4, 10),
    fb=st.integers(-4, 10),
    fo=st.integers(-4, 10),
    relu=st.booleans(),
)
def test_add_is_the_rounded_exact_sum(a, b, fa, fb, fo, relu) -> None:
    """Item 7: the exact real sum, rounded half up to the output's fraction length, saturated."""
    out = FixedFormat(8, fo)
    two = Fraction(2)
    exact = (a / two**fa + b / two**fb) * two**fo
    want = min(max(math.floor(exact + Fraction(1, 2)), out.min), out.max)
    if relu:
        want = max(want, 0)
    got = add_aligned(np.array([a]), fa, np.array([b]), fb, out, apply_relu=relu)
    assert int(got[0]) == want


def test_add_refuses_an_alignment_beyond_the_hardware() -> None:
    with pytest.raises(ValueError, match="apart"):
        add_aligned(np.zeros(1), 0, np.zeros(1), ADD_MAX_ALIGN + 1, FixedFormat(8, 0), apply_relu=0)


def test_reference_follows_the_graph() -> None:
    """The net's output recomputed by hand from its layers, tensor by tensor."""
    net = random_graph_net(np.random.default_rng(3), n_tests=5)
    x = net.test_inputs
    formats = net.tensor_formats()
    t = {NET_INPUT: x}
    for name in ("stem", "b1", "b2"):
        layer = net.layers[[la.name for la in net.layers].index(name)]
        t[name] = run_layer(layer, t[net.sources(net.layers.index(layer))[0]])
    res = net.layers[3]
    t["res"] = add_aligned(
        t["stem"],
        formats["stem"].frac,
        t["b2"],
        formats["b2"].frac,
        res.format,
        apply_relu=res.relu,
    )
    t["e1"] = run_layer(net.layers[4], t["res"])
    t["e3"] = run_layer(net.layers[5], t["res"])
    cat = np.concatenate([t["e1"], t["e3"]], axis=1)
    y = run_layer(net.layers[8], cat.reshape(len(x), -1))
    assert np.array_equal(run_net(net, x), y)
    taps = run_net(net, x, taps=True)
    assert np.array_equal(taps[6], cat) and np.array_equal(taps[-1], y)
    # A corrupted tensor in the middle changes the output: the check above can fail.
    f = formats["b2"]
    t["b2"] = np.where(t["b2"] >= 0, f.min, f.max)
    bad = add_aligned(
        t["stem"],
        formats["stem"].frac,
        t["b2"],
        formats["b2"].frac,
        res.format,
        apply_relu=res.relu,
    )
    assert not np.array_equal(bad, taps[3])


def test_graph_round_trip_is_version_3_and_deterministic(tmp_path: Path) -> None:
    net = random_graph_net(np.random.default_rng(4))
    path = save_net(net, tmp_path / "g.sfnet")
    data = path.read_bytes()
    m = _manifest(data)
    assert m["version"] == 3
    assert [e.get("inputs") for e in m["layers"]][3:7] == [
        ["stem", "b2"],
        None,
        ["res"],
        ["e1", "e3"],
    ]
    back = load_net(path)
    assert [la.inputs for la in back.layers] == [la.inputs for la in net.layers]
    assert net_to_bytes(back) == data == net_to_bytes(random_graph_net(np.random.default_rng(4)))
    assert np.array_equal(run_net(back, back.test_inputs), net.test_outputs)


def test_a_stack_is_still_written_as_version_2() -> None:
    net = random_net(np.random.default_rng(1))
    assert net.is_chain and _manifest(net_to_bytes(net))["version"] == 2
    assert not random_graph_net(np.random.default_rng(1)).is_chain


def _edit(net, index: int, **changes):
    layers = list(net.layers)
    layers[index] = type(layers[index])(**{**layers[index].__dict__, **changes})
    return layers


@pytest.mark.parametrize(
    ("index", "changes", "message"),
    [
        (1, {"inputs": ("e1",)}, "'e1' comes later in the net"),
        (1, {"inputs": ("nope",)}, "'nope' is not a layer of the net"),
        (1, {"inputs": ("b1",)}, "cannot read its own output"),
        (3, {"inputs": ("stem", "e1")}, "comes later"),
        (1, {"inputs": ("stem", NET_INPUT)}, "takes 1 input, got 2"),
    ],
)
def test_bad_graphs_name_the_layer(index, changes, message) -> None:
    net = random_graph_net(np.random.default_rng(5), channels=2)
    with pytest.raises(IRError, match=message) as err:
        net.replace(layers=tuple(_edit(net, index, **changes)))
    assert err.value.layer == net.layers[index].name and err.value.field == "inputs"


def test_add_of_different_shapes_and_unused_outputs_are_refused() -> None:
    net = random_graph_net(np.random.default_rng(6), channels=2)
    with pytest.raises(IRError, match="shapes .* of 'stem' and 'input' differ"):
        net.replace(layers=tuple(_edit(net, 3, inputs=("stem", NET_INPUT))))
    layers = list(net.layers)
    layers[3] = Add("res", ("stem", "stem"), net.layers[3].format)  # b2 now feeds nothing
    with pytest.raises(IRError, match="'b2', field 'inputs': its output is used by no layer"):
        net.replace(layers=tuple(layers))


def test_concat_needs_one_size() -> None:
    net = random_graph_net(np.random.default_rng(7), channels=2, size=4)
    with pytest.raises(IRError, match="'cat', field 'inputs': shapes .* differ beyond the first"):
        net.replace(layers=tuple(_edit(net, 5, stride=2)))


def test_concat_needs_one_format() -> None:
    net = random_graph_net(np.random.default_rng(7), channels=2)
    e3 = net.layers[5]
    other = FixedFormat(e3.output_format.bits, e3.output_format.frac - 1)
    with pytest.raises(IRError, match="'cat', field 'inputs': formats .* differ"):
        net.replace(layers=tuple(_edit(net, 5, output_format=other)))


def test_join_layers_check_their_input_counts() -> None:
    fmt = FixedFormat(8, 4)
    with pytest.raises(IRError, match="an add takes 2 inputs, got 3"):
        Add("a", ("x", "y", "z"), fmt)
    with pytest.raises(IRError, match="a concat takes 2 or more, got 1"):
        Concat("c", ("x",))


def test_files_with_bad_graphs_are_refused_on_load(tmp_path: Path, rewrite_net_file) -> None:
    path = save_net(random_graph_net(np.random.default_rng(8)), tmp_path / "g.sfnet")

    def cycle(m):
        m["layers"][1]["inputs"] = ["b2"]

    with pytest.raises(IRError, match="'b1', field 'inputs': 'b2' comes later"):
        load_net(rewrite_net_file(path, cycle))

    def old_version(m):
        m["version"] = 2

    with pytest.raises(IRError, match="field 'inputs': appears in a version 2 file"):
        load_net(rewrite_net_file(path, old_version))

    def not_names(m):
        m["layers"][3]["inputs"] = "stem"

    with pytest.raises(IRError, match="'res', field 'inputs': must be a list of layer names"):
        load_net(rewrite_net_file(path, not_names))

    def no_inputs(m):
        del m["layers"][6]["inputs"]

    with pytest.raises(IRError, match="'cat', field 'inputs': is missing"):
        load_net(rewrite_net_file(path, no_inputs))


@pytest.mark.parametrize("kind", ["fixed", "pow2"])
@pytest.mark.parametrize(("fa", "fb", "fo"), [(3, 3, 3), (5, 2, 4), (1, 6, 7), (4, 4, 0)])
def test_add_as_conv_is_exact(kind, fa, fb, fo) -> None:
    """What the hardware runs for an add (a 1x1 conv over both inputs) equals item 7."""
    rng = np.random.default_rng(fa * 100 + fb * 10 + fo)
    a_fmt, b_fmt, out = FixedFormat(8, fa), FixedFormat(6, fb), FixedFormat(8, fo)
    a = rng.integers(a_fmt.min, a_fmt.max + 1, size=(5, 3, 2, 2))
    b = rng.integers(b_fmt.min, b_fmt.max + 1, size=(5, 3, 2, 2))
    for relu in (False, True):
        add = Add("res", ("x", "y"), out, relu=relu)
        conv = add.as_conv(a_fmt, b_fmt, 3, kind)
        assert conv.weight_format.kind == kind
        want = add_aligned(a, fa, b, fb, out, apply_relu=relu)
        assert np.array_equal(run_layer(conv, np.concatenate([a, b], axis=1)), want)
