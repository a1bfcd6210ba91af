"""Whole-net differential fuzzing: each mixed-engine net compiled into its own accelerator.

:func:`squeezeforge.sim.fuzz.mixed_nets` draws the net (a chain, or a graph with a residual
add, a concat, grouped convs, average pools) and the shapes of its engines (conv rows x cols,
FC PEs, FIFO depth, relative-index width). :func:`run_whole_net` compiles it with
the ordinary passes, except that the engines take those small shapes, writes the build folder
(:func:`~squeezeforge.codegen.build.write_build`), simulates it on Verilator
(:func:`~squeezeforge.sim.netsim.simulate`) and compares every score with the reference and
every step's measured cycles with its estimate. Memory contents are part of ``top.v``, so every
net is its own Verilator build (about 15 s on one core for these small engines).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hypothesis import given
from hypothesis import seed as hypothesis_seed

from ..sim.fuzz import (
    FuzzStats,
    NetOutcome,
    campaign_settings,
    cycle_miss,
    mixed_nets,
    net_digest,
    save_regression,
)
from ..sim.ir import Net
from ..sim.netsim import simulate
from ..sim.target import Target
from .build import write_build
from .plan import Plan, compile_net

__all__ = [
    "build_whole_net",
    "check_whole_net",
    "compile_with_shapes",
    "fuzz_whole_nets",
    "run_whole_net",
]


def compile_with_shapes(net: Net) -> Plan:
    """The compiler's passes for a Target with the engine shapes in
    ``net.metadata["fuzz"]["engines"]`` (the default Target when there are none)."""
    shapes = net.metadata.get("fuzz", {}).get("engines", {})
    if not shapes:
        return compile_net(net)
    conv, fc = shapes["conv"], shapes["fc"]
    target = Target(
        name="fuzz",
        conv_rows=conv["rows"],
        conv_cols=conv["cols"],
        fc_pes=fc["n_pe"],
        fifo_depth=fc["fifo_depth"],
        index_bits=fc["index_bits"],
    )
    return compile_net(net, target)


def build_whole_net(net: Net, out_dir: str | Path) -> Path:
    """Compile ``net`` with its engine shapes and write its build folder."""
    write_build(compile_with_shapes(net), out_dir)
    return Path(out_dir)


def check_whole_net(net: Net, build: str | Path) -> NetOutcome:
    """Simulate a build of ``net``; compare every score with the reference and every step's
    measured cycles with its estimate (both as the build folder holds them)."""
    images = len(net.test_inputs)
    report = simulate(build, images)
    outcome = NetOutcome(net.name, images=images, layers=len(report["steps"]))
    outcome.mismatched_images = images - report["bit_exact"]
    if not report["golden_consistent"]:
        outcome.problems.append(f"net {net.name}: stored outputs differ from the reference")
    if report["first_mismatch"] is not None:
        outcome.problems.append(f"net {net.name}: first mismatch {report['first_mismatch']}")
    for step in report["steps"]:
        est, got = step["cycles_estimated"], step["cycles_measured"]
        outcome.cycle_checks += 1
        outcome.cycle_exact += int(got == est)
        # The estimate of an FC step is a mean over images: one cycle of rounding slack.
        if cycle_miss(got, est, slack=1):
            outcome.cycle_misses += 1
            outcome.problems.append(
                f"net {net.name}, step {step['index']} ({step['engine']}): {got} cycles"
                f" measured, {est} estimated"
            )
    return outcome


def run_whole_net(net: Net, work_dir: str | Path | None = None) -> NetOutcome:
    """Build and check ``net`` in a temporary folder (removed afterwards, Verilator's output
    included)."""
    with tempfile.TemporaryDirectory(prefix="fuzz-net-", dir=work_dir) as tmp:
        build = build_whole_net(net, Path(tmp) / "build")
        return check_whole_net(net, build)


def fuzz_whole_nets(
    *,
    examples: int,
    seed: int = 0,
    work_dir: str | Path | None = None,
    save_dir: str | Path | None = None,
    stats: FuzzStats | None = None,
    on_net: Callable[[FuzzStats], None] | None = None,
) -> FuzzStats:
    """Let Hypothesis draw ``examples`` mixed-engine nets, one accelerator build each.

    A failing net is shrunk (each try is a build), saved to ``save_dir`` and re-raised.
    """
    stats = stats if stats is not None else FuzzStats()
    state: dict = {"failing": None, "shrinking": False}

    @campaign_settings(examples)
    @hypothesis_seed(seed)
    @given(mixed_nets())
    def check(net: Net) -> None:
        if not state["shrinking"] and net_digest(net) in stats.digests:
            return  # Hypothesis repeats some examples: build each net once
        start = time.perf_counter()
        outcome = run_whole_net(net, work_dir)
        if not state["shrinking"]:
            stats.add(outcome, net)
            stats.builds += 1
            stats.sim_runs += 1
            stats.seconds += time.perf_counter() - start
            if on_net is not None:
                on_net(stats)
        if outcome.failed:
            state["shrinking"] = True
            state["failing"] = net
            raise AssertionError("\n".join(outcome.problems[:10]))

    try:
        check()
    except AssertionError:
        if state["failing"] is not None:
            net = state["failing"]
            stats.failing.append(
                str(save_regression(net, save_dir)) if save_dir is not None else net.name
            )
        raise
    return stats
