"""The end-to-end job on the embedded default: train, compress, generate, simulate, synthesize.

A flow is a list of named steps. Each step writes its result (and the seconds it took) to
``<out>/steps/<name>.json`` after its outputs are in place, so a flow that was interrupted runs
again from the first step without a result, and the report says where the time went.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..sim.ir import atomic_write_bytes, check_writable, load_net
from ..sim.target import Target

__all__ = ["FlowConfig", "run_flow"]


@dataclass(frozen=True)
class FlowConfig:
    """What the flow does; its hash decides whether a finished step can be reused."""

    out_dir: str = "runs/flow"
    model: str = "cnn"
    epochs: int | None = None  # the trainer's default
    seed: int = 0
    recipes: tuple[str, ...] = ("inq5", "deep-compression")
    baseline_recipe: str = "fixed8"  # dense 8-bit weights: the speed-up's "before"
    images: int = 100
    # A Yosys run per target and build takes a minute or more here (ecp5 with place and route,
    # three): the flow covers ice40 and ecp5; scripts/headline.py adds xc7.
    targets: tuple[str, ...] = ("ice40", "ecp5")
    # Place and route for Fmax takes about five minutes per ecp5 build here; scripts/headline.py
    # turns it on, the default flow keeps within its ten minutes without it.
    fmax: bool = False
    # The hardware every net is compressed for (its report's bytes) and generated as.
    hardware: Target = field(default_factory=Target)
    extra: dict[str, Any] = field(default_factory=dict)


def _write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=1, sort_keys=True, default=str).encode())


class _Steps:
    def __init__(self, cfg: FlowConfig, log: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out_dir)
        self.log = log
        self.times: dict[str, float] = {}
        self.results: dict[str, Any] = {}

    def key(self, name: str, inputs: Any) -> str:
        blob = json.dumps([asdict(self.cfg), name, inputs], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def run(self, name: str, inputs: Any, fn: Callable[[], Any]) -> Any:
        path = self.out / "steps" / f"{name}.json"
        key = self.key(name, inputs)
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("key") == key:
                self.log(f"[{name}] done before, reused ({saved['seconds']:.1f} s then)")
                self.times[name] = 0.0
                self.results[name] = saved["result"]
                return saved["result"]
        self.log(f"[{name}] ...")
        t0 = time.monotonic()
        result = fn()
        seconds = time.monotonic() - t0
        _write_json(path, {"key": key, "seconds": seconds, "result": result})
        self.times[name] = seconds
        self.results[name] = result
        self.log(f"[{name}] {seconds:.1f} s")
        return result


def _file_digest(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _child_pids() -> list[int]:
    """Processes this one started (Yosys, nextpnr), from /proc; empty where there is none."""
    me = os.getpid()
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name in parentheses may hold spaces: the fields follow the last ')'.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me:
            children.append(int(stat.parent.name))
    return children


def _stop_children() -> None:
    """Terminate the tools the worker threads wait on, so an interrupt does not wait for them.

    Ctrl-C in a terminal reaches the whole process group, tools included; a SIGINT sent to this
    process alone would otherwise leave each worker waiting a minute for its Yosys run.
    """
    for pid in _child_pids():
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass


def run_flow(cfg: FlowConfig, log: Callable[[str], None] = print, quiet: bool = False) -> dict:
    """Run (or resume) the flow; returns the report that is also written to report.json."""
    from ..models.compress import compress
    from ..models.data import load_digits
    from ..models.train import default_epochs, evaluate, save_checkpoint, train
    from ..sim.netsim import simulate
    from .build import generate
    from .engines import check_supported
    from .plots import write_plots
    from .report_resources import build_resources
    from .summary import write_report

    steps = _Steps(cfg, log)
    out = steps.out
    check_writable(out, folder=True)  # before training, not after the whole flow
    ckpt = out / f"{cfg.model}.pt"
    epochs = cfg.epochs or default_epochs(cfg.model)

    def do_train() -> dict:
        model, history = train(cfg.model, epochs, cfg.seed, quiet=quiet)
        data = load_digits()
        acc = evaluate(model, data.x_test, data.y_test)
        save_checkpoint(
            ckpt, cfg.model, model, {"epochs": epochs, "seed": cfg.seed}, {"test_accuracy": acc}
        )
        return {"checkpoint": str(ckpt), "float_accuracy": acc, "epochs": epochs}

    trained = steps.run("train", [], do_train)

    compressed: dict[str, dict] = {}
    for recipe in (*cfg.recipes, cfg.baseline_recipe):
        net_path = out / f"{cfg.model}-{recipe}.sfnet"

        def do_compress(recipe: str = recipe, net_path: Path = net_path) -> dict:
            report = compress(
                ckpt,
                recipe,
                net_path,
                quiet=quiet,
                check_layer=check_supported,
                target=cfg.hardware,
            )
            return {"net": str(net_path), "report": report}

        compressed[recipe] = steps.run(f"compress-{recipe}", [trained], do_compress)

    builds: dict[str, dict] = {}
    for recipe in (*cfg.recipes, cfg.baseline_recipe):
        build_dir = out / "build" / f"{cfg.model}-{recipe}"

        def do_generate(recipe: str = recipe, build_dir: Path = build_dir) -> dict:
            manifest = generate(load_net(compressed[recipe]["net"]), build_dir, cfg.hardware)
            return {
                "build": str(build_dir),
                "cycles_estimated": manifest.cycles_estimated,
                "steps": manifest.to_dict()["steps"],
                "checksum": manifest.checksum,
            }

        # Keyed on the net's bytes, not on the compress step's result: that holds timings, and
        # a compress run again with byte-identical output must not rebuild.
        net_file = compressed[recipe]["net"]
        net_key = {"net": net_file, "sha256": _file_digest(net_file)}
        builds[recipe] = steps.run(f"generate-{recipe}", [net_key], do_generate)

    sims: dict[str, dict] = {}
    # The dense 8-bit baseline is simulated too: the speed-up compares measured cycles.
    for recipe in (*cfg.recipes, cfg.baseline_recipe):

        def do_simulate(recipe: str = recipe) -> dict:
            return simulate(builds[recipe]["build"], cfg.images)

        sims[recipe] = steps.run(f"simulate-{recipe}", [builds[recipe]], do_simulate)

    def resource_job(recipe: str, target: str) -> dict:
        def do_resources() -> dict:
            fmax = cfg.fmax and target in ("ice40", "ecp5")
            return build_resources(builds[recipe]["build"], target, with_fmax=fmax)

        return steps.run(f"resources-{recipe}-{target}", [builds[recipe]], do_resources)

    # Yosys and nextpnr run as subprocesses: two threads keep both cores busy.
    jobs = [(recipe, target) for recipe in cfg.recipes for target in cfg.targets]
    # Longest first (ecp5 places slowest, ice40 next), so the two threads finish together.
    jobs.sort(key=lambda job: ("ecp5", "ice40", "xc7").index(job[1]))
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        done = pool.map(lambda job: resource_job(*job), jobs)
        resources = {f"{r}/{t}": result for (r, t), result in zip(jobs, done, strict=True)}
    except BaseException:
        # Interrupted (or a job failed): queued jobs are dropped and running tools stopped, so
        # the flow ends now instead of after the tools in flight.
        pool.shutdown(wait=False, cancel_futures=True)
        _stop_children()
        raise
    pool.shutdown()

    report = {
        "config": asdict(cfg),
        "train": trained,
        "compress": {k: v["report"] for k, v in compressed.items()},
        "generate": builds,
        "simulate": sims,
        "resources": resources,
        "seconds": steps.times,
    }
    plots = write_plots(report, out)
    report["plots"] = plots
    write_report(report, out)
    return report


def default_out_dir() -> str:
    return os.environ.get("SQUEEZEFORGE_FLOW_DIR", "runs/flow")
