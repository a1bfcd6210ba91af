"""The top level from frozen parameters; its ports from its signature, read by the bench."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from squeezeforge.codegen.plan import compile_net, top_params
from squeezeforge.hw.interface import discard
from squeezeforge.hw.top import Top, TopParams, TopStep, port_list
from squeezeforge.sim.benches.top_bench import _USED, _Ports
from squeezeforge.sim.random_layers import random_net


@pytest.fixture(scope="module")
def params() -> TopParams:
    return top_params(compile_net(random_net(np.random.default_rng(0), n_tests=2)))


def _top(params: TopParams) -> Top:
    top = Top(params)
    discard(top)  # only its signature is read here; test_e2e_rtl elaborates it
    return top


def test_ports_follow_the_signature(params: TopParams) -> None:
    top = _top(params)
    ports = {name: (path, direction, width) for name, path, direction, width in port_list(top)}
    assert ports["i_pixel__payload"] == ("i_pixel.payload", "in", params.act_bits)
    assert ports["o_score__valid"] == ("o_score.valid", "out", 1)
    assert ports["step"][2] == (len(params.steps) - 1).bit_length()
    assert ports["clk"] == ("clk", "in", 1)
    # Every port the bench drives or watches is one the signature gives.
    assert set(_USED) <= {path for path, _, _ in ports.values()}


def test_bench_names_a_port_the_top_lacks(params: TopParams) -> None:
    names = {path: name for name, path, _, _ in port_list(_top(params))}
    dut = SimpleNamespace(**{name: object() for name in names.values()})
    assert _Ports(dut, names)["tap.data"] is dut.tap__data
    del names["tap.data"]
    with pytest.raises(AssertionError, match="the top level has no port tap.data"):
        _Ports(dut, names)


def test_params_are_checked(params: TopParams) -> None:
    # A plain stack ping-pongs between two regions of the one activation memory.
    counts = [s.out_count for s in params.steps[:-1]]
    assert params.memory_depth == max(a + b for a, b in zip(counts, counts[1:], strict=False))
    with pytest.raises(ValueError, match=r"steps\[0\]: segments do not make 4 words"):
        TopParams(
            params.act_bits,
            (TopStep(params.steps[0].engine, 4, 4, {}, in_segments=((0, 3),)),),
            params.engines,
        )
    with pytest.raises(ValueError, match=r"steps\[0\] runs on 'nowhere', not an engine"):
        TopParams(params.act_bits, (TopStep("nowhere", 4, 4, {}),), params.engines)
    with pytest.raises(ValueError, match="at least one step"):
        TopParams(params.act_bits, (), params.engines)
    # The top level takes frozen parameters, never the compiler's plan.
    with pytest.raises(TypeError, match="params must be TopParams, not Plan"):
        Top(compile_net(random_net(np.random.default_rng(1), n_tests=1)))
