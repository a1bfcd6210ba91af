"""The differential fuzzer (sim/fuzz.py): its strategies draw valid nets with the corners they
promise (graph blocks in whole nets too), its comparison fails on a corrupted golden value or
cycle estimate, a failing example shrinks to a small net saved as a regression file, and - on
Verilator - a bounded profile of random nets on every engine build, and every saved regression,
match bit for bit."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed

from squeezeforge.sim.fuzz import (
    ENGINES,
    EngineRunner,
    FuzzStats,
    engine_case,
    engine_nets,
    fill_weights,
    fuzz_engine,
    mixed_nets,
    replay_net,
    score,
)
from squeezeforge.sim.ir import (
    Add,
    AvgPool2d,
    Concat,
    Conv2d,
    Dense,
    MaxPool2d,
    SparseDense,
    load_net,
)
from squeezeforge.sim.numerics import (
    CodebookWeights,
    FixedWeights,
    Pow2Weights,
    avg_pool_multiplier,
)
from squeezeforge.sim.reference import run_net

ROOT = Path(__file__).resolve().parents[2]
# Engine builds shared with scripts/fuzz_rtl.py: made once, reused while the Verilog is the same.
BUILD_ROOT = ROOT / "build" / "fuzz" / "engines"
REGRESSIONS = ROOT / "tests" / "regressions"
FAST = settings(
    max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


def _perfect_measurements(case: dict) -> list[dict]:
    """What an engine that matches the reference and the cycle model would report."""
    return [
        {"outputs": list(r["expected"]), "cycles": r["model_cycles"], "timeout": False}
        for r in case["runs"]
    ]


def _draw(engine: str, count: int, seed: int) -> list:
    nets: list = []

    @settings(
        max_examples=count, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @hypothesis_seed(seed)
    @given(engine_nets(engine))
    def collect(net) -> None:
        nets.append(net)

    collect()
    return nets


# Strategies ---------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", list(ENGINES))
def test_drawn_nets_are_valid_and_fit_their_engine(engine: str) -> None:
    @FAST
    @given(engine_nets(engine, images=3))
    def check(net) -> None:
        np.testing.assert_array_equal(run_net(net, net.test_inputs), net.test_outputs)
        case = engine_case(net, engine)  # raises if a layer does not fit the engine
        assert len(case["runs"]) == 3 * sum(1 for lay in net.layers if hasattr(lay, "bias"))
        assert net.metadata["fuzz"]["engine"] == engine

    check()


def test_strategies_reach_the_promised_corners() -> None:
    conv = _draw("conv_fixed", 150, 1) + _draw("conv_pow2", 60, 2)
    fc = _draw("fc_fixed", 80, 3) + _draw("fc_codebook", 80, 4) + _draw("fc_pow2", 60, 5)
    convs = [lay for n in conv for lay in n.layers if isinstance(lay, Conv2d)]
    kernels = {lay.kernel for lay in convs}
    assert any(kh > 1 and kw == 1 for kh, kw in kernels)  # k x 1
    assert any(kh == 1 and kw > 1 for kh, kw in kernels)  # 1 x k
    assert {lay.stride for lay in convs} == {1, 2, 3}
    assert {lay.padding for lay in convs} == {0, 1, 2}
    assert any(isinstance(lay, MaxPool2d) for n in conv for lay in n.layers)
    computes = convs + [lay for n in fc for lay in n.layers]
    assert {lay.relu for lay in computes} == {False, True}
    assert {type(lay) for n in fc for lay in n.layers} == {Dense, SparseDense}
    kinds = Counter(type(lay.weight_format) for lay in computes)
    assert set(kinds) == {FixedWeights, Pow2Weights, CodebookWeights}
    bits = {f.bits for lay in computes for f in (lay.input_format, lay.output_format)}
    assert {2, 16} <= bits
    fracs = [lay.input_format.frac for lay in computes]
    assert min(fracs) < 0 and any(lay.input_format.frac > lay.input_format.bits for lay in computes)
    densities = [
        np.count_nonzero(lay.weight_values()) / lay.weight_values().size for lay in computes
    ]
    assert 0.0 in densities and 1.0 in densities
    assert any(np.count_nonzero(lay.weight_values()) == 1 for lay in computes)
    assert any(len(n.layers) >= 3 for n in conv + fc)  # chains of layers on one engine


def test_mixed_nets_reach_the_graph_corners() -> None:
    nets: list = []

    @settings(
        max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @hypothesis_seed(1)
    @given(mixed_nets(images=2))
    def collect(net) -> None:
        np.testing.assert_array_equal(run_net(net, net.test_inputs), net.test_outputs)
        nets.append(net)

    collect()
    seen: Counter = Counter()
    for net in nets:
        shapes, formats = net.tensor_shapes(), net.tensor_formats()
        for k, lay in enumerate(net.layers):
            src = net.sources(k)
            if isinstance(lay, Conv2d) and lay.groups > 1:
                seen["depthwise" if lay.groups == lay.in_channels else "grouped"] += 1
            elif isinstance(lay, AvgPool2d):
                seen["global" if lay.kernel == shapes[src[0]][1:] else "window"] += 1
                assert (lay.multiplier, lay.shift) == avg_pool_multiplier(math.prod(lay.kernel))
                assert lay.format == formats[src[0]]
            elif isinstance(lay, Add):
                a, b = (formats[s] for s in src)
                seen["aligned" if a.frac != b.frac else "same frac"] += 1
                seen["two convs" if lay.name.replace("add", "conv1") in shapes else "one"] += 1
                seen[f"add relu {lay.relu}"] += 1
            elif isinstance(lay, Concat):
                index = {la.name: j for j, la in enumerate(net.layers)}
                a, b = (net.layers[index[s]] for s in src)
                assert isinstance(a, Conv2d) and isinstance(b, Conv2d)
                assert net.sources(index[a.name]) == net.sources(index[b.name])
                seen["concat"] += 1
            if getattr(lay, "clamp_max", None) is not None:
                seen["clamp"] += 1
    for corner in ("depthwise", "grouped", "global", "window", "aligned", "two convs", "one"):
        assert seen[corner] >= 2, (corner, seen)
    assert seen["concat"] >= 2 and seen["clamp"] >= 1
    assert seen["add relu True"] and seen["add relu False"]


@pytest.mark.parametrize(
    "fmt",
    [FixedWeights(5, 2), Pow2Weights(4, 0, -3), CodebookWeights(2, 6, 1, (0, -32, 5, 31))],
    ids=["fixed", "pow2", "codebook"],
)
def test_weight_patterns(fmt) -> None:
    rng = np.random.default_rng(0)
    shape = (6, 7)

    def values(pattern: str) -> np.ndarray:
        return fmt.decode(fill_weights(rng, fmt, shape, pattern))

    assert np.count_nonzero(values("zero")) == 0
    assert np.count_nonzero(values("one")) == 1
    assert np.count_nonzero(values("full")) == 42
    lo, hi = fmt.value_range if not isinstance(fmt, CodebookWeights) else (-32, 31)
    assert np.all(values("min") == lo) and np.all(values("max") == hi)


# The comparison -----------------------------------------------------------------------------


def test_score_fails_on_a_corrupted_golden_value_or_estimate() -> None:
    net = _draw("fc_codebook", 3, 7)[-1]
    case = engine_case(net, "fc_codebook")
    assert not score(net, case, _perfect_measurements(case)).failed

    bad_golden = _perfect_measurements(case)
    bad_golden[-1]["outputs"][0] += 1
    outcome = score(net, case, bad_golden)
    assert outcome.mismatched_images == 1 and outcome.cycle_misses == 0
    assert "output 0: expected" in outcome.problems[0]

    late = _perfect_measurements(case)
    late[0]["cycles"] = int(late[0]["cycles"] * 1.1) + 1
    outcome = score(net, case, late)
    assert outcome.cycle_misses == 1 and outcome.mismatched_images == 0
    assert "the cycle model predicts" in outcome.problems[0]

    # Within the 2 % contract a count is a hit (and is not counted as exact).
    near = _perfect_measurements(case)
    near[0]["cycles"] = int(near[0]["cycles"] * 1.01)
    assert not score(net, case, near).cycle_misses

    hung = _perfect_measurements(case)[:1]
    hung[0]["timeout"] = True
    assert score(net, case, hung).mismatched_images == len(net.test_inputs)


class _FaultyEngine:
    """A software engine that matches the reference except on conv layers of 3+ filters."""

    engine = "conv_fixed"

    def run(self, nets, *, stalls=None):
        outcomes = []
        for net in nets:
            case = engine_case(net, self.engine)
            measured = _perfect_measurements(case)
            for run, got in zip(case["runs"], measured, strict=True):
                layer = next(lay for lay in net.layers if lay.name == run["layer"])
                if layer.out_channels >= 3:
                    got["outputs"][-1] += 1
            outcomes.append(score(net, case, measured))
        return outcomes


def test_a_failing_example_shrinks_and_is_saved(tmp_path: Path) -> None:
    stats = FuzzStats()
    with pytest.raises(AssertionError, match="expected"):
        fuzz_engine(_FaultyEngine(), examples=50, seed=3, save_dir=tmp_path, stats=stats)
    saved = sorted(tmp_path.glob("*.sfnet"))
    assert len(saved) == 1 and stats.failing == [str(saved[0])]
    net = load_net(saved[0])
    assert net.metadata["fuzz"]["engine"] == "conv_fixed"
    # Shrunk: one conv layer with just enough filters to fail, one channel, a small input.
    (conv,) = [lay for lay in net.layers if isinstance(lay, Conv2d)]
    assert conv.out_channels == 3 and conv.in_channels == 1
    assert conv.kernel == (1, 1) and not any(isinstance(lay, MaxPool2d) for lay in net.layers)
    assert stats.nets >= 1 and stats.mismatches >= 1


# On Verilator --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runners() -> dict[str, EngineRunner]:
    class _Lazy(dict):
        def __missing__(self, engine: str) -> EngineRunner:
            self[engine] = EngineRunner(engine, BUILD_ROOT)
            return self[engine]

    return _Lazy()


@pytest.mark.rtl
@pytest.mark.parametrize("engine", list(ENGINES))
def test_fuzz_profile(engine: str, runners) -> None:
    """The bounded profile: a few batches of random nets per engine build, 10 images each."""
    stats = fuzz_engine(
        runners[engine], examples=3, batch=8, seed=2024, save_dir=REGRESSIONS, stats=FuzzStats()
    )
    assert stats.nets == stats.distinct >= 3 and stats.mismatches == 0 and stats.cycle_misses == 0
    assert stats.cycle_checks > 0 and stats.cycle_exact == stats.cycle_checks


@pytest.mark.rtl
@pytest.mark.parametrize("engine", ["conv_pow2", "fc_pow2"])
def test_rtl_comparison_fails_on_corrupted_data(engine: str, runners) -> None:
    nets = _draw(engine, 4, 11)[-2:]
    good = runners[engine].run(nets)
    assert not any(o.failed for o in good), [o.problems for o in good]

    def golden(cases: list[dict]) -> None:
        cases[1]["runs"][-1]["expected"][0] += 1

    bad = runners[engine].run(nets, corrupt=golden)
    assert not bad[0].failed and bad[1].mismatched_images == 1
    assert "output 0: expected" in bad[1].problems[0]

    def estimate(cases: list[dict]) -> None:
        cases[0]["runs"][0]["model_cycles"] += 50

    bad = runners[engine].run(nets, corrupt=estimate)
    assert bad[0].cycle_misses == 1 and not bad[1].failed
    assert "the cycle model predicts" in bad[0].problems[0]


def _engine_regressions() -> list[Path]:
    return sorted(
        p
        for p in REGRESSIONS.glob("*.sfnet")
        if load_net(p).metadata.get("fuzz", {}).get("engine") in ENGINES
    )


@pytest.mark.rtl
@pytest.mark.parametrize("path", _engine_regressions(), ids=lambda p: p.stem)
def test_saved_regressions_match(path: Path, runners) -> None:
    net = load_net(path)
    outcome = replay_net(net, runners[net.metadata["fuzz"]["engine"]])
    assert not outcome.failed, "\n".join(outcome.problems)


@pytest.mark.rtl
def test_campaign_script_prints_the_table(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "fuzz_rtl.py"),
            "--nets",
            "6",
            "--whole-nets",
            "0",
            "--engines",
            "fc_fixed",
            "conv_fixed",
            "--images",
            "2",
            "--save-dir",
            str(tmp_path),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {r["kind"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == {"fc_fixed", "conv_fixed", "total"}
    total = rows["total"]
    assert total["nets"] >= 6 and total["images"] == 2 * total["nets"]
    assert total["mismatches"] == 0 and total["cycle_misses"] == 0 and total["builds"] == 2
