"""Fit the folding pass's resource model (codegen/folding.py) to Yosys runs, and print its error.

Each run compiles a net for one engine shape (conv rows x cols, FC PEs) on one FPGA family,
emits the whole accelerator and synthesizes it once with the hierarchy kept
(:func:`~squeezeforge.codegen.resources.synthesize_hierarchy`): that gives the conv engine, the
FC unit and the rest of the top level in one run. The runs are kept in a JSON file (``--runs``)
keyed by net digest, family and shape, so a second call synthesizes only what is missing. The
fit is least squares of LUT and FF on the model's features, per engine and family; BRAM and DSP
are not fitted (the model counts them from memory shapes and multipliers).

    .venv/bin/python scripts/fit_resources.py --fit-only        # refit the stored runs
    .venv/bin/python scripts/fit_resources.py --families ecp5 --shapes 4x8:8 \
        --nets scripts/data/fold_nets/cnn-dc.sfnet              # one more run, then refit

The stored runs (``scripts/data/fold_runs.json``) are of the digits CNN (3 epochs of training)
compressed with inq5, deep-compression and fixed8 (``scripts/data/fold_nets``), conv 1x2 / 2x2 /
2x4 / 4x4 / 8x2 / 8x4 with 1 / 2 / 4 / 8 / 2 / 16 FC PEs; each Yosys run took 20 s to 11 min.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from squeezeforge.codegen import folding
from squeezeforge.codegen.plan import compile_net, top_params
from squeezeforge.codegen.resources import synthesize_hierarchy
from squeezeforge.hw.top import Top
from squeezeforge.sim.ir import load_net
from squeezeforge.sim.rtl import amaranth_to_verilog
from squeezeforge.sim.target import Target, parse_array


def _shape(text: str) -> tuple[int, int, int]:
    array, _, pes = text.partition(":")
    rows, cols = parse_array(array)
    return rows, cols, int(pes or 1)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


DATA = Path(__file__).resolve().parent / "data"


def _digits_nets(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    exe = [sys.executable, "-m", "squeezeforge"]
    ckpt = folder / "cnn.pt"
    subprocess.run([*exe, "train", "--model", "cnn", "--epochs", "3", "-o", ckpt, "-q"], check=True)
    nets = []
    for recipe in ("inq5", "deep-compression", "fixed8"):
        out = folder / f"cnn-{recipe}.sfnet"
        subprocess.run([*exe, "compress", ckpt, "--recipe", recipe, "-o", out, "-q"], check=True)
        nets.append(out)
    return nets


def target_for(family: str, rows: int, cols: int, pes: int) -> Target:
    return Target(name="fit", family=family, conv_rows=rows, conv_cols=cols, fc_pes=pes)


def collect(
    nets: list[Path], families: list[str], shapes: list, runs_file: Path, net_dir: Path
) -> dict:
    runs = json.loads(runs_file.read_text()) if runs_file.is_file() else {}
    for path in nets:
        net = load_net(path)
        # A refit compiles each run's net again (for the model's features): keep it there.
        kept = net_dir / path.name
        if not kept.exists():
            net_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, kept)
        for family in families:
            for rows, cols, pes in shapes:
                key = f"{_digest(path)} {family} {rows}x{cols}:{pes}"
                if key in runs:
                    continue
                plan = compile_net(net, target_for(family, rows, cols, pes))
                verilog = amaranth_to_verilog(Top(top_params(plan)), "top")
                t0 = time.monotonic()
                modules = synthesize_hierarchy(verilog, "top", family)
                found = {"top": modules["top"].to_dict()}
                for name in plan.engines:
                    found[name] = modules[f"top.{name}"].to_dict()
                for report in found.values():
                    report.pop("cells", None)
                runs[key] = {"net": path.name, "family": family, "shape": [rows, cols, pes]}
                runs[key]["modules"] = found
                runs[key]["seconds"] = round(time.monotonic() - t0, 1)
                print(f"  {key}: {runs[key]['seconds']} s", file=sys.stderr)
                runs_file.parent.mkdir(parents=True, exist_ok=True)
                runs_file.write_text(json.dumps(runs, indent=1))
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", nargs="*", type=Path, help=".sfnet files (default: digits CNN)")
    ap.add_argument("--families", nargs="+", default=["ice40", "ecp5"])
    ap.add_argument("--shapes", nargs="+", default=["1x2:1", "2x4:4", "4x4:8", "8x2:2"])
    ap.add_argument("--runs", type=Path, default=DATA / "fold_runs.json")
    ap.add_argument(
        "--net-dir", type=Path, default=DATA / "fold_nets", help="where the runs' nets are"
    )
    ap.add_argument("--fit-only", action="store_true", help="fit the runs in --runs, no Yosys")
    ap.add_argument("--json", action="store_true", help="print the fit as JSON")
    args = ap.parse_args(argv)
    if args.fit_only:
        runs = json.loads(args.runs.read_text())
    else:
        nets = args.nets or sorted(args.net_dir.glob("*.sfnet")) or _digits_nets(args.net_dir)
        shapes = [_shape(s) for s in args.shapes]
        runs = collect(nets, args.families, shapes, args.runs, args.net_dir)
    fit = folding.fit_coefficients(list(runs.values()), args.net_dir)
    if args.json:
        print(json.dumps(fit, indent=1))
    else:
        print(folding.describe_fit(fit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
