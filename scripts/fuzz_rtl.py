"""A differential fuzzing campaign: random nets on the RTL against the reference model and the
cycle models, with a table of what ran.

``--nets N`` nets in all, each with ``--images`` test images: ``--whole-nets`` of them are
mixed-engine nets compiled into their own accelerator (one Verilator build each); the rest are
engine nets shared evenly over the five engine builds of :data:`squeezeforge.sim.fuzz.ENGINES`
(one build each, batches of nets per simulation). Every layer's output is compared bit for bit
with the reference, and cycles (where neither stream stalls) with the cycle model. A failing
net is shrunk by Hypothesis and saved as a ``.sfnet`` regression; the exit status is then 1.

    python scripts/fuzz_rtl.py --nets 1000                  # the campaign of docs/fuzzing.md
    python scripts/fuzz_rtl.py --nets 50 --whole-nets 1     # a quick one
    python scripts/fuzz_rtl.py --nets 100 --json            # the table as JSON
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from squeezeforge.codegen.fuzz import fuzz_whole_nets
from squeezeforge.sim.fuzz import ENGINES, FUZZ_IMAGES, EngineRunner, FuzzStats, fuzz_engine

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = (
    ("kind", "kind"),
    ("nets", "nets"),
    ("distinct", "distinct"),
    ("images", "images"),
    ("layer_runs", "layer runs"),
    ("mismatches", "mismatches"),
    ("cycle_checks", "cycle checks"),
    ("cycle_exact", "exact"),
    ("cycle_misses", "cycle misses"),
    ("builds", "builds"),
    ("sim_runs", "sim runs"),
    ("seconds", "time s"),
)


def _row(kind: str, s: FuzzStats) -> dict:
    return {
        "kind": kind,
        "nets": s.nets,
        "distinct": s.distinct,
        "images": s.images,
        "layer_runs": s.layer_runs,
        "mismatches": s.mismatches,
        "cycle_checks": s.cycle_checks,
        "cycle_exact": s.cycle_exact,
        "cycle_misses": s.cycle_misses,
        "builds": s.builds,
        "sim_runs": s.sim_runs,
        "seconds": round(s.seconds, 1),
        "failing": list(s.failing),
    }


def _markdown(rows: list[dict]) -> str:
    head = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(str(r[key]) for key, _ in COLUMNS) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def _engine_campaign(name, target, args, bar, build_root) -> FuzzStats:
    stats = FuzzStats()
    start = time.perf_counter()
    runner = EngineRunner(name, build_root)
    stats.builds = 1
    seed = args.seed
    examples = max(1, math.ceil(target / (args.batch / 2)))
    while stats.nets < target:
        before = stats.nets

        def tick(s: FuzzStats, before=before) -> None:
            bar.update(s.nets - tick.seen)
            tick.seen = s.nets

        tick.seen = before
        try:
            fuzz_engine(
                runner,
                examples=examples,
                batch=args.batch,
                seed=seed,
                save_dir=args.save_dir,
                stats=stats,
                on_batch=tick,
                images=args.images,
            )
        except AssertionError as failure:
            tqdm.write(f"{name}: FAILED, shrunk net saved to {stats.failing[-1:]}\n{failure}")
            break
        seed += 1
        # Hypothesis' lists vary in length: ask for as many batches as the rest needs.
        per_batch = max(1.0, stats.nets / max(1, stats.sim_runs))
        examples = max(1, math.ceil((target - stats.nets) / per_batch))
    stats.seconds = time.perf_counter() - start
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", type=int, default=1000, help="nets in all (default 1000)")
    parser.add_argument(
        "--whole-nets",
        type=int,
        default=None,
        help="of which mixed-engine nets with their own build (default: nets / 40)",
    )
    parser.add_argument("--images", type=int, default=FUZZ_IMAGES, help="test images per net")
    parser.add_argument("--batch", type=int, default=12, help="most engine nets per simulation")
    parser.add_argument("--seed", type=int, default=0, help="Hypothesis seed of the first round")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    parser.add_argument("--build-dir", type=Path, default=ROOT / "build" / "fuzz")
    parser.add_argument("--save-dir", type=Path, default=ROOT / "tests" / "regressions")
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    args = parser.parse_args(argv)
    whole = args.nets // 40 if args.whole_nets is None else args.whole_nets
    whole = min(whole, args.nets)
    engine_total = args.nets - whole
    share = {e: engine_total // len(args.engines) for e in args.engines}
    for e in args.engines[: engine_total % len(args.engines)]:
        share[e] += 1

    rows = []
    total = FuzzStats()
    wall = time.perf_counter()
    with tqdm(total=args.nets, unit="net", desc="fuzz") as bar:
        for name, target in share.items():
            if target:
                stats = _engine_campaign(name, target, args, bar, args.build_dir / "engines")
                rows.append(_row(name, stats))
                total.merge(stats)
        if whole:
            stats = FuzzStats()
            start = time.perf_counter()

            def tick(s: FuzzStats) -> None:
                bar.update(1)

            work = args.build_dir / "nets"
            work.mkdir(parents=True, exist_ok=True)
            try:
                fuzz_whole_nets(
                    examples=whole,
                    seed=args.seed,
                    work_dir=work,
                    save_dir=args.save_dir,
                    stats=stats,
                    on_net=tick,
                )
            except AssertionError as failure:
                tqdm.write(f"whole nets: FAILED, shrunk net saved to {stats.failing}\n{failure}")
            stats.seconds = time.perf_counter() - start
            rows.append(_row("whole-net", stats))
            total.merge(stats)
    total.seconds = time.perf_counter() - wall
    rows.append(_row("total", total))
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(_markdown(rows))
        for r in rows[:-1]:
            for path in r["failing"]:
                print(f"failing net ({r['kind']}): {path}")
    return 1 if total.mismatches or total.cycle_misses or total.failing else 0


if __name__ == "__main__":
    sys.exit(main())
