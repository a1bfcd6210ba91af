"""Throughput on ECP5: today's engine sizes beside the sizes the folding pass picks for a budget.

    python scripts/bench_throughput.py [--out runs/throughput] [--images 20] [--json]

The digits CNN (trained once, ``squeezeforge train``) compressed with the dense 8-bit baseline
(fixed8), inq5 and deep-compression, each built up to six ways:

* ``today``: the LFE5U-25F preset's engines (conv 4x4, 8 FC PEs), one image at a time;
* ``fold-25f``: the folding pass's choice for the 25F's budget (``generate --fold auto``);
* ``fold-85f``: the same for the LFE5U-85F;
* ``pipe``, ``fold-25f-pipe``, ``fold-85f-pipe``: the same engines (or the folding pass's
  choice for two stages) as two pipeline stages, conv layers then FC layers (``--pipeline``);
* ``pipe-db``, ``fold-25f-pipe-db``: ``pipe`` and ``fold-25f-pipe`` with the conv engine's
  input double-buffered (``--double-buffer``: conv2 takes conv1's outputs as they leave);
* ``smallest`` (not in the default set): the smallest engines (conv 2x2, one FC PE) on the
  25F, a quick check of a net's figures (place and route takes about a minute, not ten).

Per build, in one table: cycles per inference measured on Verilator (with the estimate and
the bit-exact images, one at a time and, for a pipelined build, back to back), the ideal bound
(MACs / PEs, non-zero work / PEs), the latency over that bound, the initiation interval
measured with the images fed back to back (the latency for a build that runs one image at a
time) beside its estimate and the slowest stage's ideal bound, Fmax from nextpnr, images/s at
Fmax over the interval, LUT / FF / DSP / BRAM from Yosys, images/s per LUT, and images/s and
images/s per LUT over ``today``'s build of the same net. Builds and their synthesis results
are kept under ``--out``, so a second run only prints.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from squeezeforge.codegen.build import write_build
from squeezeforge.codegen.folding import FOLD_PASSES
from squeezeforge.codegen.plan import PASSES, compile_net
from squeezeforge.codegen.report_resources import build_resources
from squeezeforge.sim.errors import ToolError
from squeezeforge.sim.ir import load_net
from squeezeforge.sim.manifest import read_manifest
from squeezeforge.sim.netsim import simulate
from squeezeforge.sim.target import resolve_target

RECIPES = ("fixed8", "inq5", "deep-compression")
# name -> (preset, fold?, two pipeline stages?, Target overrides)
CONFIGS: dict[str, tuple[str, bool, bool, dict]] = {
    "today": ("ecp5-25f", False, False, {}),
    "pipe": ("ecp5-25f", False, True, {}),
    "fold-25f": ("ecp5-25f", True, False, {}),
    "fold-25f-pipe": ("ecp5-25f", True, True, {}),
    "fold-85f": ("ecp5-85f", True, False, {}),
    "fold-85f-pipe": ("ecp5-85f", True, True, {}),
    "pipe-db": ("ecp5-25f", False, True, {"double_buffer": True}),
    "fold-25f-pipe-db": ("ecp5-25f", True, True, {"double_buffer": True}),
    "smallest": ("ecp5-25f", False, False, {"conv_rows": 2, "conv_cols": 2, "fc_pes": 1}),
}
DEFAULT_CONFIGS = [name for name in CONFIGS if name != "smallest"]


def _cli(*args: object) -> None:
    subprocess.run([sys.executable, "-m", "squeezeforge", *map(str, args), "-q"], check=True)


def nets(out: Path, recipes: list[str]) -> dict[str, Path]:
    """The digits CNN trained and compressed with each recipe (kept: a rerun reuses them)."""
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "cnn.pt"
    if not ckpt.is_file():
        _cli("train", "--model", "cnn", "-o", ckpt)
    paths = {}
    for recipe in recipes:
        paths[recipe] = out / f"cnn-{recipe}.sfnet"
        if not paths[recipe].is_file():
            _cli("compress", ckpt, "--recipe", recipe, "-o", paths[recipe])
    return paths


def measure(net_path: Path, config: str, build: Path, images: int) -> dict:
    preset, fold, pipeline, overrides = CONFIGS[config]
    if not (build / "manifest.json").is_file():
        # A kept build is not compiled again (the folding choice alone takes seconds).
        passes = FOLD_PASSES if fold else PASSES
        target = resolve_target(preset, pipeline=pipeline or None, **overrides)
        write_build(compile_net(load_net(net_path), target, passes), build)
    manifest = read_manifest(build)
    sim = simulate(build, images)
    note = None
    try:
        res = build_resources(build, "ecp5", with_fmax=True)["total"]
    except ToolError as exc:
        # A failed tool run is a result too: the row keeps the cycles and says why.
        res = dict.fromkeys(("lut", "ff", "dsp", "bram"))
        note = str(exc).splitlines()[0]
    cycles = sim["cycles_per_inference"]
    ideal = sum(s.cycles_ideal for s in manifest.steps)
    # Images back to back: a pipelined build takes the next image after its interval; one
    # image at a time, the next starts when the last score has left.
    interval = sim["interval"] if sim["pipelined"] else cycles
    split = manifest.split if manifest.split is not None else len(manifest.steps)
    stage_ideal = max(
        sum(s.cycles_ideal for s in manifest.steps[:split]),
        sum(s.cycles_ideal for s in manifest.steps[split:]),
    )
    fmax = res.get("fmax_mhz")
    rate = fmax * 1e6 / interval if fmax else None
    t = manifest.target
    return {
        "note": note,
        "config": config,
        "engines": f"conv {t['conv_rows']}x{t['conv_cols']}, {t['fc_pes']} FC PE"
        + ("s" if t["fc_pes"] != 1 else ""),
        "cycles": cycles,
        "estimated": manifest.cycles_estimated,
        "bit_exact": f"{sim['bit_exact']}/{sim['images']}"
        + (f", {sim['streamed_bit_exact']}/{sim['images']}" if sim["pipelined"] else ""),
        "ideal": ideal,
        "latency_over_ideal": cycles / ideal,
        "interval": interval,
        "interval_estimated": manifest.interval_estimated or manifest.cycles_estimated,
        # The slowest stage's ideal bound: the whole net when it runs one image at a time.
        "stage_ideal": stage_ideal,
        "interval_over_stage_ideal": interval / stage_ideal,
        "fmax_mhz": fmax,
        "images_per_s": rate,
        **{k: res[k] for k in ("lut", "ff", "dsp", "bram")},
        "images_per_s_per_lut": rate / res["lut"] if rate and res["lut"] else None,
    }


def _f(x: float | None, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def table(rows: dict[str, list[dict]]) -> str:
    lines = [
        "| recipe | build | engines | cycles (RTL) | estimated | bit-exact | ideal bound"
        " | latency / ideal | interval (RTL) | estimated | slowest stage's bound"
        " | interval / bound | Fmax MHz | images/s | LUT | FF | DSP | BRAM"
        " | images/s per LUT | images/s vs today | per LUT vs today |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:"
        "|---:|---:|---:|",
    ]
    for recipe, runs in rows.items():
        base = next((r for r in runs if r["config"] == "today"), None)
        for r in runs:
            vs = per = None
            if base and base["images_per_s"] and r["images_per_s"]:
                vs = r["images_per_s"] / base["images_per_s"]
                if r["images_per_s_per_lut"] and base["images_per_s_per_lut"]:
                    per = r["images_per_s_per_lut"] / base["images_per_s_per_lut"]
            lines.append(
                f"| {recipe} | {r['config']} | {r['engines']} | {r['cycles']:.0f}"
                f" | {r['estimated']} | {r['bit_exact']} | {r['ideal']:.0f}"
                f" | {r['latency_over_ideal']:.2f} | {r['interval']:.0f}"
                f" | {r['interval_estimated']} | {r['stage_ideal']:.0f}"
                f" | {r['interval_over_stage_ideal']:.2f}"
                f" | {_f(r['fmax_mhz'], '.1f')} | {_f(r['images_per_s'], ',.0f')}"
                f" | {_f(r['lut'], ',')} | {_f(r['ff'], ',')} | {_f(r['dsp'], 'd')}"
                f" | {_f(r['bram'], 'g')}"
                f" | {_f(r['images_per_s_per_lut'], '.2f')} | {_f(vs, '.2f')}"
                f" | {_f(per, '.2f')} |"
            )
    notes = [f"- {recipe} {r['config']}: {r['note']}" for recipe, runs in rows.items()
             for r in runs if r["note"]]  # fmt: skip
    return "\n".join(lines + ([""] + notes if notes else []))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=Path("runs/throughput"))
    ap.add_argument("--images", type=int, default=20, help="images simulated per build")
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES))
    ap.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, choices=list(CONFIGS))
    ap.add_argument(
        "--nets", nargs="+", type=Path, help="recipe=path.sfnet pairs instead of training"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.nets:
        bad = [str(p) for p in args.nets if "=" not in str(p)]
        if bad:
            ap.error(f"--nets takes recipe=path.sfnet pairs, not {bad[0]!r}")
        paths = {k: Path(v) for k, v in (str(p).split("=", 1) for p in args.nets)}
    else:
        paths = nets(args.out, args.recipes)
    rows: dict[str, list[dict]] = {}
    for recipe, path in paths.items():
        for config in args.configs:
            row = measure(path, config, args.out / f"{recipe}-{config}", args.images)
            rows.setdefault(recipe, []).append(row)
            print(f"  {recipe} {config}: {row['cycles']:.0f} cycles", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(table(rows))
    return rows


if __name__ == "__main__":
    main()
