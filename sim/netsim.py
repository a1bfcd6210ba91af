"""``simulate``: run a generated build on Verilator and compare it with the reference.

Every score of every image is compared with the reference model with ``==``; where a score
differs, the taps (each step's output as written between steps) locate the first layer that
departed. Cycles are measured per inference and per step and reported beside the estimates in
the build's manifest.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import SqueezeforgeError
from .ir import load_net
from .manifest import Manifest, read_manifest
from .metrics import quality, task_of
from .progress import activity
from .reference import net_inputs, predictions, run_net
from .rtl import build_verilog, run_cocotb

__all__ = ["SimulationError", "layer_cycles", "simulate"]

BENCH_DIR = Path(__file__).parent / "benches"


class SimulationError(SqueezeforgeError, ValueError):
    """A request the simulator cannot run (too many images, a broken build)."""


def layer_cycles(steps: list[dict]) -> list[dict]:
    """A report's ``steps`` with the steps of one layer (the groups of a grouped conv or a pool,
    which follow each other) summed into one row: ``layers``, ``engine``, ``groups``,
    ``cycles_measured``, ``cycles_estimated`` and a ``label`` for tables (``dw2 (16 groups)``)."""
    rows: list[dict] = []
    for s in steps:
        if rows and rows[-1]["layers"] == list(s["layers"]):
            row = rows[-1]
            row["groups"] += 1
            row["cycles_measured"] += s["cycles_measured"]
            row["cycles_estimated"] += s["cycles_estimated"]
        else:
            rows.append(
                {
                    "layers": list(s["layers"]),
                    "engine": s["engine"],
                    "groups": 1,
                    "cycles_measured": s["cycles_measured"],
                    "cycles_estimated": s["cycles_estimated"],
                }
            )
    for row in rows:
        groups = f" ({row['groups']} groups)" if row["groups"] > 1 else ""
        row["label"] = "+".join(row["layers"]) + groups
    return rows


def _golden(net, manifest: Manifest, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    taps = run_net(net, x, taps=True)
    names = [layer.name for layer in net.layers]
    # Each step writes a slice of its output tensor (a group's channels, or all of it).
    step_taps = [
        taps[names.index(s.layers[-1])].reshape(len(x), -1)[
            :, s.out_offset : s.out_offset + math.prod(s.out_shape)
        ]
        for s in manifest.steps
    ]
    return taps[-1], step_taps


def simulate(
    build_dir: str | os.PathLike,
    images: int = 10,
    *,
    waves: bool = False,
    inputs: np.ndarray | None = None,
) -> dict:
    """Push ``images`` test images, or a user's own ``inputs``, through the build's Verilog;
    compare and measure.

    Without ``inputs`` the golden outputs are the expected outputs stored in the net; the
    reference model is run again and must agree with them (``golden_consistent``). With
    ``inputs`` (integers (N, *input_shape) in the net's input format; ``images`` is ignored)
    the golden outputs are the reference model's, and ``golden_consistent`` and the accuracies
    are None: there are neither stored outputs nor labels. Either way the report holds the RTL
    outputs (``outputs``, one list per input) and the golden ones (``expected_outputs``);
    ``report["bit_exact"] == report["images"]`` when every output matched.
    """
    # Absolute: the simulator runs in a folder of its own and reads the case file from there.
    build = Path(build_dir).resolve()
    manifest = read_manifest(build)
    net = load_net(build / "net.sfnet")
    own = inputs is not None
    if own:
        x = net_inputs(net, inputs, floats=False)
        images = int(x.shape[0])
    else:
        available = net.test_inputs.shape[0]
        if images < 1 or images > available:
            raise SimulationError(f"--images {images}: the net holds {available} test images")
        x = net.test_inputs[:images].astype(np.int64)
    reference, step_taps = _golden(net, manifest, x)
    if own:
        expected = reference.reshape(images, -1).astype(np.int64)
        golden_consistent = None
    else:
        expected = net.test_outputs[:images].reshape(images, -1).astype(np.int64)
        golden_consistent = bool(np.array_equal(reference.reshape(images, -1), expected))

    sim_dir = build_verilog(
        (build / "top.v").read_text(),
        manifest.top,
        # A traced build is slower: keep it beside the plain one rather than replace it.
        build / ("sim_build_waves" if waves else "sim_build"),
        waves=waves,
    )
    with tempfile.TemporaryDirectory(prefix="case-", dir=build) as tmp:
        case = Path(tmp) / "case.npz"
        result_path = Path(tmp) / "result.json"
        np.savez(
            case,
            inputs=x.reshape(images, -1),
            expected=expected,
            n_steps=len(manifest.steps),
            stream=int(manifest.split is not None),
        )
        with activity(f"simulate: {images} images on Verilator"):
            result = run_cocotb(
                sim_dir,
                manifest.top,
                "top_bench",
                BENCH_DIR,
                extra_env={
                    "SQUEEZEFORGE_CASE": str(case),
                    "SQUEEZEFORGE_RESULT": str(result_path),
                    # The bench drives the ports the top's signature gave, not names of its own.
                    "SQUEEZEFORGE_PORTS": json.dumps({p.path: p.name for p in manifest.ports}),
                },
                waves=waves,
            )
        if not result_path.is_file():
            result.check()  # says why the bench wrote nothing
            raise SimulationError(f"the bench wrote no results ({result.results_xml})")
        result_json = json.loads(result_path.read_text())
        measured = result_json["images"]
        streamed = result_json.get("streamed")

    scores = [np.asarray(m["scores"], dtype=np.int64) for m in measured]
    exact = [
        s.shape == e.shape and bool(np.all(s == e)) for s, e in zip(scores, expected, strict=True)
    ]
    first_bad = next((n for n, ok in enumerate(exact) if not ok), None)
    mismatch = None
    if first_bad is not None:
        mismatch = _locate(first_bad, measured[first_bad], expected[first_bad], step_taps, manifest)
    labels = None if own else net.test_labels[:images]
    cycles = [m["cycles"] for m in measured]
    per_step = np.mean([m["step_cycles"] for m in measured], axis=0)
    report = {
        "build": str(build),
        "net": manifest.net,
        # Builds made before the Target existed name none.
        "target": manifest.target,
        "images": images,
        "bit_exact": int(sum(exact)),
        "golden_consistent": golden_consistent,
        "first_mismatch": mismatch,
        "cycles_per_inference": float(np.mean(cycles)),
        "cycles_min": int(min(cycles)),
        "cycles_max": int(max(cycles)),
        "cycles_estimated": manifest.cycles_estimated,
        "step_cycles_per_image": [m["step_cycles"] for m in measured],
        **_interval(manifest, streamed, expected),
        "steps": [
            {
                "index": s.index,
                "layers": list(s.layers),
                "engine": s.engine,
                "cycles_measured": float(per_step[i]),
                "cycles_estimated": s.cycles_estimated,
            }
            for i, s in enumerate(manifest.steps)
        ],
        **_scores(scores, reference, labels, net.output_format.frac),
        "inputs": "own" if own else "test vectors",
        "outputs": [s.tolist() for s in scores],
        "expected_outputs": expected.tolist(),
        "rtl_log": str(result.log) if result.log else None,
    }
    if waves:
        report["waves"] = str(next(result.run_dir.glob("dump.*"), ""))
    return report


def _interval(manifest: Manifest, streamed: dict | None, expected: np.ndarray) -> dict:
    """The initiation interval: cycles between the ``done`` of consecutive images fed back to
    back (a pipelined build), against its estimate; one image at a time, the latency."""
    if streamed is None:
        return {"pipelined": False, "interval": None, "interval_estimated": None}
    done = streamed["done_at"]
    gaps = np.diff(done)
    start_gaps = np.diff(streamed["start_at"])
    exact = sum(
        bool(np.array_equal(np.asarray(got, dtype=np.int64), want))
        for got, want in zip(streamed["scores"], expected, strict=True)
    )
    return {
        "pipelined": True,
        # The first image fills the pipeline: its gap is the latency, not an interval.
        "interval": float(np.mean(gaps)) if len(gaps) else None,
        "interval_min": int(gaps.min()) if len(gaps) else None,
        "interval_max": int(gaps.max()) if len(gaps) else None,
        "interval_estimated": manifest.interval_estimated,
        # Cycles between consecutive dones, and between the starts the first stage took.
        "intervals": gaps.tolist(),
        "start_intervals": start_gaps.tolist(),
        "streamed_bit_exact": exact,
    }


def _scores(
    scores: list[np.ndarray], reference: np.ndarray, labels: np.ndarray | None, frac: int
) -> dict:
    """RTL and reference accuracy (class labels), or their error metrics (regression targets);
    None without labels (the user's own inputs)."""
    out: dict = {"accuracy": None, "accuracy_reference": None}
    if labels is None:
        return out
    if task_of(labels) == "classification":
        got = np.array([np.argmax(s) if s.size else -1 for s in scores])
        out["accuracy"] = float(np.mean(got == labels))
        out["accuracy_reference"] = float(np.mean(predictions(reference) == labels))
        return out
    scale = 2.0**-frac
    want = reference[0].size
    # Output counts that are wrong are a mismatch reported elsewhere, not a score.
    got_ok = all(s.size == want for s in scores)
    out["error"] = (
        quality(np.stack([s.reshape(-1) for s in scores]) * scale, labels) if got_ok else None
    )
    out["error_reference"] = quality(reference * scale, labels)
    return out


def _locate(n: int, got: dict, want: np.ndarray, step_taps, manifest: Manifest) -> dict:
    """First output that differs, and the first step whose written activations differ."""
    scores = np.asarray(got["scores"])
    where = {"image": n}
    if scores.shape != want.shape:
        where.update(output=None, expected_count=int(want.size), got_count=int(scores.size))
    else:
        i = int(np.flatnonzero(scores != want)[0])
        where.update(output=i, expected=int(want[i]), got=int(scores[i]))
    taps = np.asarray(got["taps"], dtype=np.int64)
    offset = 0
    for s, tap in zip(manifest.steps, step_taps, strict=True):
        if s.to_scores:  # its outputs are the scores, not taps
            continue
        ref = tap[n]
        mine = taps[offset : offset + ref.size]
        if mine.shape != ref.shape or np.any(mine != ref):
            where["first_bad_layer"] = s.layers[0]
            break
        offset += ref.size
    else:
        where["first_bad_layer"] = manifest.steps[-1].layers[0]
    return where
