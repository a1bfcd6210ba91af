"""Design-space sweeps: which compression recipe and which engine sizes give the best accuracy
and images/s that fit a part, as a Pareto front, computed on a Dask cluster.

A sweep spec (TOML, ``docs/sweep.md``) names the model, the data, the axes (recipes, recipe
parameters such as ``"inq.bits"``, Target knobs such as ``conv_array`` and ``fc_pes``, the
target preset), the sampling and the objectives. :func:`load_spec` validates all of it (one
:class:`~squeezeforge.sim.errors.UserError` naming the key) before any work.

The work is coarse Dask tasks keyed by content, so a retried or duplicated task does no harm:

* ``train``: the float model (built-in models only; a model file is used as it is);
* ``compress``: one per recipe variant, shared by every hardware point of that variant;
* ``estimate``: one per point, the cheap figures: reference accuracy, Cr for the point's
  Target, cycles from the engines' cycle models, LUT/FF/DSP/BRAM from the folding pass's
  resource model, the fit against the part's budget, images/s at the Target's clock goal;
* ``verify``: for a few points on the front: RTL simulation bit for bit on N images with the
  measured cycles, Yosys resources and nextpnr Fmax.

Tasks return their results; the client writes each one atomically as it arrives
(``points/<id>.json``, ``nets/<key>.sfnet``, ``builds/<id>/``), so the workers need no shared
file system and a rerun of the same spec resumes where the last one stopped. A failure (a
point that does not fit, a tool failure, a training that diverges, a worker lost too often) is
a row with its reason, never the end of the sweep.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..sim.errors import UserError
from ..sim.ir import atomic_write_bytes, check_writable, net_from_bytes
from ..sim.progress import progress
from ..sim.target import Target, parse_array, resolve_target, shipped_targets

__all__ = [
    "FIGURES",
    "HARDWARE_AXES",
    "Objective",
    "Point",
    "SweepSpec",
    "connect",
    "load_spec",
    "pareto_front",
    "run_sweep",
    "shipped_sweeps",
]

#: The Target knobs a sweep may vary; ``target`` is a preset name or a Target TOML file.
HARDWARE_AXES: tuple[str, ...] = ("target", "conv_array", "fc_pes", "fifo_depth", "index_bits")

#: The figures every point gets, and so the objectives a spec may name.
FIGURES: tuple[str, ...] = (
    "accuracy",
    "images_per_s",
    "cycles",
    "lut",
    "ff",
    "dsp",
    "bram",
    "compression_ratio",
    "bytes",
)

SAMPLING = ("grid", "random", "nsga2")

# A task that raised is run again this many times; a task whose worker died is rescheduled by
# the scheduler itself (``distributed.scheduler.allowed-failures`` times, 3 by default).
RETRIES = 2

# How long an existing scheduler may take to answer before the sweep says so.
PROBE_SECONDS = 5.0

_SPEC_KEYS = ("name", "model", "axes", "sampling", "objectives", "verify")
_MODEL_KEYS = ("name", "epochs", "seed", "data")
_VERIFY_KEYS = ("points", "images", "synth", "fmax", "synth_seconds", "pick")


@dataclass(frozen=True)
class Objective:
    """A figure and whether more (``max``) or less (``min``) of it is better."""

    figure: str
    direction: str

    def better(self, a: float, b: float) -> bool:
        return a > b if self.direction == "max" else a < b


@dataclass(frozen=True)
class Point:
    """One configuration: a recipe variant and a Target."""

    recipe: str
    recipe_params: tuple[tuple[str, Any], ...]
    hardware: tuple[tuple[str, Any], ...]

    @property
    def id(self) -> str:
        blob = json.dumps([self.recipe, self.recipe_params, self.hardware], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def params(self) -> dict[str, Any]:
        return {"recipe": self.recipe, **dict(self.recipe_params), **dict(self.hardware)}

    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.params().items())


@dataclass(frozen=True)
class VerifySpec:
    """How many front points are verified, and how."""

    points: int = 2
    images: int = 20
    synth: bool = True
    fmax: bool = True
    synth_seconds: int = 1800  # Yosys and nextpnr together, per point
    # Which front points: "spread" along the first objective (its ends first), or the
    # "smallest" by estimated LUTs (the quickest for Yosys and nextpnr).
    pick: str = "spread"


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep spec (:func:`load_spec`)."""

    name: str
    model: str  # a built-in model name, or the absolute path of a model file
    epochs: int | None
    seed: int
    data: str
    recipes: tuple[str, ...]
    recipe_axes: dict[str, tuple[Any, ...]]
    hardware_axes: dict[str, tuple[Any, ...]]
    sampling: str = "grid"
    samples: int = 0
    sampling_seed: int = 0
    objectives: tuple[Objective, ...] = ()
    verify: VerifySpec = field(default_factory=VerifySpec)
    # Recipe name -> its TOML table (shipped name or file), for the content keys.
    recipe_sources: dict[str, dict] = field(default_factory=dict)
    # A ``target`` value that is a Target file -> its absolute path (read by the client).
    target_files: dict[str, str] = field(default_factory=dict)

    def target(self, point: Point) -> Target:
        """The point's Target, resolved here: the workers get the Target, not a file name."""
        return point_target(point.hardware, self.target_files)

    @property
    def builtin_model(self) -> bool:
        return not Path(self.model).is_absolute()

    def model_key(self) -> str:
        if self.builtin_model:
            what: Any = ["builtin", self.model, self.epochs, self.seed, self.data]
        else:
            digest = hashlib.sha256(Path(self.model).read_bytes()).hexdigest()
            what = ["file", digest, self.data]
        return _digest(what)

    def variants(self, recipe: str) -> list[tuple[tuple[str, Any], ...]]:
        """The recipe parameter combinations that change ``recipe`` (a parameter of a pass the
        recipe does not run is not an axis of it)."""
        mine = [k for k in self.recipe_axes if _has_pass(self.recipe_sources[recipe], k)]
        values = [self.recipe_axes[k] for k in mine]
        return [tuple(zip(mine, combo, strict=True)) for combo in itertools.product(*values)]

    def grid(self) -> list[Point]:
        hw_keys = list(self.hardware_axes)
        hw = [
            tuple(zip(hw_keys, combo, strict=True))
            for combo in itertools.product(*self.hardware_axes.values())
        ]
        return [Point(r, v, h) for r in self.recipes for v in self.variants(r) for h in hw]

    def normalized(self, recipe: str, params: Mapping[str, Any]) -> Point:
        """The point of a sampler's choice, with the parameters ``recipe`` does not read
        dropped (so two choices that build the same thing are one point)."""
        mine = tuple(
            (k, params[k]) for k in self.recipe_axes if _has_pass(self.recipe_sources[recipe], k)
        )
        return Point(recipe, mine, tuple((k, params[k]) for k in self.hardware_axes))


def _digest(what: Any) -> str:
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _has_pass(source: Mapping[str, Any], axis: str) -> bool:
    kind = axis.split(".", 1)[0]
    return any(step.get("pass") == kind for step in source.get("steps", []))


def recipe_with(source: Mapping[str, Any], params: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """The recipe table with ``"<pass>.<key>"`` set in every step of that pass."""
    out = json.loads(json.dumps(source))  # a deep copy of plain TOML data
    for axis, value in params:
        kind, key = axis.split(".", 1)
        for step in out["steps"]:
            if step.get("pass") == kind:
                step[key] = value
    return out


# ---------------------------------------------------------------------------------------------
# The spec


def shipped_sweeps() -> list[str]:
    """Names of the sweep specs that ship with squeezeforge (``codegen/sweeps/*.toml``)."""
    folder = resources.files("squeezeforge.codegen") / "sweeps"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def _spec_text(spec: str | os.PathLike) -> tuple[str, Path | None]:
    path = Path(spec)
    if path.is_file():
        return path.read_text(), path.resolve().parent
    if str(spec) in shipped_sweeps():
        return (
            resources.files("squeezeforge.codegen") / "sweeps" / f"{spec}.toml"
        ).read_text(), None
    raise UserError(
        f"no sweep spec file {str(spec)!r} and no shipped spec of that name"
        f" (shipped: {', '.join(shipped_sweeps())})"
    )


def _table(data: Any, where: str, allowed: Sequence[str]) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise UserError(f"{where} must be a table")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(allowed)})")
    return dict(data)


def _int_key(table: Mapping[str, Any], key: str, default: Any, lo: int, hi: int, where: str) -> Any:
    value = table.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise UserError(f"{where}: {key} must be an integer in {lo}..{hi}, got {value!r}")
    return value


def load_spec(spec: str | os.PathLike) -> SweepSpec:
    """Read and validate a sweep spec: a TOML file or a shipped spec's name.

    Every problem is one :class:`UserError` naming the key: an unknown axis or recipe
    parameter, an empty axis, a value a recipe or the Target refuses, an objective that is not
    a measured figure.
    """
    from ..models.compress import load_recipe, parse_recipe
    from ..models.compress.recipe import PASSES
    from ..models.nets import MODELS

    text, base = _spec_text(spec)
    label = str(spec)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"sweep spec {label}: not valid TOML: {exc}") from None
    top = _table(data, f"sweep spec {label}", _SPEC_KEYS)
    name = str(top.get("name", Path(label).stem))

    model = _table(top.get("model", {}), f"{label}: [model]", _MODEL_KEYS)
    model_name = model.get("name", "cnn")
    if not isinstance(model_name, str):
        raise UserError(f"{label}: [model] name must be a built-in model or a model file")
    if model_name not in MODELS:
        path = Path(model_name) if base is None else base / model_name
        if not path.is_file():
            raise UserError(
                f"{label}: [model] name {model_name!r} is neither a built-in model"
                f" ({', '.join(sorted(MODELS))}) nor a model file"
            )
        model_name = str(path.resolve())
    epochs = _int_key(model, "epochs", None, 1, 10_000, f"{label}: [model]")
    seed = _int_key(model, "seed", 0, 0, 2**31 - 1, f"{label}: [model]")
    data_spec = str(model.get("data", "digits"))
    if not data_spec.startswith("digits"):
        path = Path(data_spec) if base is None else base / data_spec
        if not path.exists():
            raise UserError(f"{label}: [model] data {data_spec!r}: no such file or folder")
        data_spec = str(path.resolve())

    axes = top.get("axes")
    if not isinstance(axes, Mapping) or not axes:
        raise UserError(f"{label}: [axes] is missing; name at least the recipes")
    checked: dict[str, tuple[Any, ...]] = {}
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{label}: axis {key!r} is empty; give a non-empty list of values")
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise UserError(f"{label}: axis {key!r} lists a value twice")
        checked[key] = tuple(values)
    recipes = checked.pop("recipe", None)
    if recipes is None:
        raise UserError(f"{label}: [axes] needs recipe = [...] (shipped names or TOML files)")
    sources: dict[str, dict] = {}
    for r in recipes:
        if not isinstance(r, str):
            raise UserError(f"{label}: axis 'recipe': {r!r} is not a recipe name")
        path = Path(r) if base is None or Path(r).is_absolute() else base / r
        recipe = load_recipe(path if path.is_file() else r)
        sources[r] = recipe.source
    hardware = {k: v for k, v in checked.items() if k in HARDWARE_AXES}
    recipe_axes = {k: v for k, v in checked.items() if k not in HARDWARE_AXES}
    for key in recipe_axes:
        kind, dot, _ = key.partition(".")
        if not dot or kind not in PASSES:
            raise UserError(
                f"{label}: unknown axis {key!r}; axes are recipe, {', '.join(HARDWARE_AXES)}"
                f' and recipe parameters as "<pass>.<key>" (passes: {", ".join(PASSES)})'
            )
        users = [r for r in recipes if _has_pass(sources[r], key)]
        if not users:
            raise UserError(f"{label}: axis {key!r}: no recipe of the sweep has a {kind} pass")
        for r in users:
            for value in recipe_axes[key]:
                # The recipe's own checks: an unknown key or a value out of range is refused.
                try:
                    parse_recipe(recipe_with(sources[r], [(key, value)]), r)
                except UserError as exc:
                    raise UserError(f"{label}: axis {key!r} = {value!r}: {exc}") from None
    target_files: dict[str, str] = {}
    for key, values in hardware.items():
        for value in values:
            _check_hardware(key, value, base, label)
            if key == "target" and value not in shipped_targets():
                path = Path(value) if base is None else base / value
                target_files[value] = str(path.resolve())
    # Every Target of the grid is valid (fc_pes a power of two, and so on) before any work.
    hw_keys = list(hardware)
    for combo in itertools.product(*hardware.values()):
        point_target(tuple(zip(hw_keys, combo, strict=True)), target_files, label)

    sampling = _table(
        top.get("sampling", {}), f"{label}: [sampling]", ("method", "samples", "seed")
    )
    method = sampling.get("method", "grid")
    if method not in SAMPLING:
        raise UserError(f"{label}: [sampling] method {method!r}: one of {', '.join(SAMPLING)}")
    samples = _int_key(sampling, "samples", 0, 0, 1_000_000, f"{label}: [sampling]")
    if method != "grid" and samples < 1:
        raise UserError(f"{label}: [sampling] method {method!r} needs samples >= 1")

    objectives_table = top.get("objectives", {"accuracy": "max", "images_per_s": "max"})
    if not isinstance(objectives_table, Mapping) or not objectives_table:
        raise UserError(f"{label}: [objectives] must name at least one figure")
    objectives = []
    for figure, direction in objectives_table.items():
        if figure not in FIGURES:
            raise UserError(
                f"{label}: objective {figure!r} is not measured (figures: {', '.join(FIGURES)})"
            )
        if direction not in ("max", "min"):
            raise UserError(f'{label}: objective {figure!r} must be "max" or "min"')
        objectives.append(Objective(figure, direction))

    verify = _table(top.get("verify", {}), f"{label}: [verify]", _VERIFY_KEYS)
    for flag in ("synth", "fmax"):
        if not isinstance(verify.get(flag, True), bool):
            raise UserError(f"{label}: [verify] {flag} must be true or false")
    if verify.get("pick", "spread") not in ("spread", "smallest"):
        raise UserError(f'{label}: [verify] pick must be "spread" or "smallest"')
    verify_spec = VerifySpec(
        pick=verify.get("pick", "spread"),
        points=_int_key(verify, "points", 2, 0, 1000, f"{label}: [verify]"),
        images=_int_key(verify, "images", 20, 1, 100_000, f"{label}: [verify]"),
        synth=verify.get("synth", True),
        fmax=verify.get("fmax", True),
        synth_seconds=_int_key(verify, "synth_seconds", 1800, 10, 86_400, f"{label}: [verify]"),
    )
    return SweepSpec(
        name=name,
        model=model_name,
        epochs=epochs,
        seed=seed,
        data=data_spec,
        recipes=tuple(recipes),
        recipe_axes=recipe_axes,
        hardware_axes=hardware,
        sampling=method,
        samples=samples,
        sampling_seed=_int_key(sampling, "seed", 0, 0, 2**31 - 1, f"{label}: [sampling]"),
        objectives=tuple(objectives),
        verify=verify_spec,
        recipe_sources=sources,
        target_files=target_files,
    )


def _check_hardware(key: str, value: Any, base: Path | None, label: str) -> None:
    where = f"{label}: axis {key!r}"
    if key == "target":
        if not isinstance(value, str):
            raise UserError(f"{where}: {value!r} is not a preset name or a TOML file")
        if value not in shipped_targets():
            path = Path(value) if base is None else base / value
            if not path.is_file():
                raise UserError(
                    f"{where}: {value!r} is neither a preset ({', '.join(shipped_targets())})"
                    " nor a Target TOML file"
                )
    elif key == "conv_array":
        try:
            parse_array(value)
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
    elif isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{where}: {value!r} is not an integer")


def point_target(
    hardware: Sequence[tuple[str, Any]], files: Mapping[str, str], where: str = "sweep"
) -> Target:
    """The Target of a point: its preset, Target file (``files`` maps the spec's value to the
    file's path) or the default, with the point's knobs."""
    knobs = dict(hardware)
    base = knobs.pop("target", None)
    try:
        return resolve_target(files.get(base, base) if base is not None else None, **knobs)
    except UserError as exc:
        raise UserError(f"{where}: point {dict(hardware)}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# The stages (run on the workers; each returns plain data and never raises on bad luck)


def _one_line(text: str) -> str:
    """A multi-line message as one table cell."""
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


def _failure(stage: str, exc: BaseException) -> dict[str, Any]:
    return {"ok": False, "reason": f"{stage}: {_one_line(str(exc)) or type(exc).__name__}"}


def _design_fields(target: Target) -> dict[str, Any]:
    fields = target.to_dict()
    for name in ("name", "part", "budget", "clock_mhz"):
        fields.pop(name, None)
    return fields


def _lost(result: Mapping[str, Any]) -> bool:
    """Whether a stage's failure was the cluster's (a worker lost too often), not the point's."""
    return str(result.get("reason", "")).startswith("cluster:")


def _scratch(suffix: str, data: bytes) -> Path:
    fd, name = tempfile.mkstemp(prefix="squeezeforge-sweep-", suffix=suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return Path(name)


def stage_train(model: str, epochs: int | None, seed: int, data: str) -> dict[str, Any]:
    """The float model as checkpoint bytes: trained (built-in) or read (a file)."""
    from ..models.data import load_dataset
    from ..models.train import evaluate, save_checkpoint, train

    start = time.monotonic()
    try:
        if Path(model).is_absolute():
            path = Path(model)
            return {"ok": True, "bytes": path.read_bytes(), "suffix": path.suffix, "seconds": 0.0}
        dataset = load_dataset(data)
        net, _ = train(model, epochs, seed, data=dataset, quiet=True)
        acc = evaluate(net, dataset.x_test, dataset.y_test)
        out = Path(tempfile.mkdtemp(prefix="squeezeforge-sweep-")) / f"{model}.pt"
        save_checkpoint(out, model, net, {"epochs": epochs, "seed": seed}, {"test_accuracy": acc})
        blob = out.read_bytes()
        shutil.rmtree(out.parent, ignore_errors=True)
        return {
            "ok": True,
            "bytes": blob,
            "suffix": ".pt",
            "float_accuracy": acc,
            "seconds": time.monotonic() - start,
        }
    except Exception as exc:  # noqa: BLE001 - failure is a row of the table, with its reason
        return _failure("train", exc)


def stage_compress(
    trained: dict[str, Any], recipe: str, source: dict, data: str, seed: int
) -> dict[str, Any]:
    """One recipe variant: the net's bytes and the compression report (without the layers)."""
    if not trained.get("ok"):
        return {"ok": False, "reason": trained["reason"]}
    from ..models.compress import compress_net, parse_recipe
    from ..models.data import load_dataset
    from ..models.user_model import load_model
    from ..sim.ir import net_to_bytes
    from .engines import check_supported

    start = time.monotonic()
    model_file = _scratch(trained["suffix"], trained["bytes"])
    try:
        ckpt = load_model(model_file)
        net, report = compress_net(
            ckpt,
            parse_recipe(source, recipe),
            data=load_dataset(data),
            seed=seed,
            quiet=True,
            check_layer=check_supported,
        )
        acc = report.get("accuracy") or {}
        if acc.get("reference") is not None and not math.isfinite(acc["reference"]):
            raise UserError("the reference accuracy is not a number (the training diverged)")
        return {
            "ok": True,
            "net": net_to_bytes(net),
            "accuracy": acc.get("reference"),
            "float_accuracy": acc.get("float"),
            # Cr's numerator: the float model's bytes, whatever the point's Target.
            "float_bytes": report["totals"]["float_bytes"],
            "seconds": time.monotonic() - start,
        }
    except Exception as exc:  # noqa: BLE001 - a recipe that fails is a row with its reason
        return _failure("compress", exc)
    finally:
        model_file.unlink(missing_ok=True)


def stage_estimate(compressed: dict[str, Any], target: Target) -> dict[str, Any]:
    """The cheap figures of one point (every one of them estimated, but the accuracy)."""
    if not compressed.get("ok"):
        return {"ok": False, "reason": compressed["reason"]}
    from ..models.compress import net_costs
    from .folding import estimate_resources
    from .plan import compile_net

    start = time.monotonic()
    try:
        net = net_from_bytes(compressed["net"])
        _, totals = net_costs(net, target)
        plan = compile_net(net, target)
        cycles = sum(s.cycles_estimated for s in plan.steps)
        res = estimate_resources(plan)["total"]
        out: dict[str, Any] = {
            "ok": True,
            "accuracy": compressed["accuracy"],
            "compression_ratio": compressed["float_bytes"] / totals["bytes"]
            if totals["bytes"]
            else None,
            "bytes": totals["bytes"],
            "cycles": cycles,
            **res.to_dict(),
            "clock_mhz": target.clock_mhz or None,
            # One image at a time: the interval between images is the latency.
            "images_per_s": target.clock_mhz * 1e6 / cycles if target.clock_mhz else None,
            "family": target.family,
            "part": target.part,
            # The hardware itself: two points that differ only in the part's budget (the
            # 25F and the 85F with the same engines) build the same design, verified once.
            "design": _digest(
                [hashlib.sha256(compressed["net"]).hexdigest(), _design_fields(target)]
            ),
        }
        if target.budget is not None:
            use = res.usage(target.budget, target.family)
            out["utilization"] = max(use)
            if max(use) > 1.0:
                worst = max(zip(use, ("LUT", "FF", "DSP", "BRAM"), strict=True))
                out["ok"] = False
                out["reason"] = (
                    f"does not fit: {worst[1]} {100 * worst[0]:.0f}% of the"
                    f" {target.part or target.name} (estimated)"
                )
        out["seconds"] = time.monotonic() - start
        return out
    except Exception as exc:  # noqa: BLE001 - a point that cannot be built is a row
        return _failure("estimate", exc)


def _resources_within(build: Path, family: str, fmax: bool, seconds: float) -> dict[str, Any]:
    """:func:`build_resources` in a process group of its own, stopped after ``seconds``: Yosys'
    WebAssembly build can run for tens of minutes on a large design, and one point must not
    hold the sweep (its row says so instead)."""
    from ..sim.errors import ToolError

    code = "from squeezeforge.codegen.sweep import _resources_child; _resources_child()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(build), family, "1" if fmax else "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Its own group: a time-out stops Yosys and nextpnr too, not only the Python above them.
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise ToolError(f"Yosys/nextpnr did not finish within {seconds:.0f} s") from None
    except BaseException:
        # The worker is stopping (an interrupt, the cluster closing): its tools stop with it.
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    if proc.returncode != 0:
        lines = [line for line in err.splitlines() if line.strip()]
        raise ToolError(lines[-1] if lines else f"exit status {proc.returncode}")
    return json.loads(out)


def _resources_child() -> None:
    """The child of :func:`_resources_within`: the report as JSON on stdout, or one line."""
    from ..codegen.report_resources import build_resources
    from ..sim.errors import SqueezeforgeError

    build, family, fmax = sys.argv[1:4]
    try:
        report = build_resources(build, family, with_fmax=fmax == "1")
    except SqueezeforgeError as exc:
        sys.exit(_one_line(str(exc)))
    print(json.dumps(report))


def stage_verify(
    compressed: dict[str, Any],
    target: Target,
    images: int,
    synth: bool,
    fmax: bool,
    synth_seconds: float = 1800.0,
) -> dict[str, Any]:
    """Generate the point's build, simulate it on Verilator bit for bit (measured cycles), then
    Yosys (and nextpnr) resources; the build's files come back with the figures."""
    from ..sim.errors import ToolError
    from ..sim.netsim import simulate
    from .build import write_build
    from .plan import compile_net

    start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="squeezeforge-sweep-"))
    out: dict[str, Any] = {"ok": True}
    try:
        net = net_from_bytes(compressed["net"])
        build = work / "build"
        write_build(compile_net(net, target), build)
        sim = simulate(build, min(images, int(net.test_inputs.shape[0])))
        out.update(
            cycles=sim["cycles_per_inference"],
            bit_exact=f"{sim['bit_exact']}/{sim['images']}",
        )
        if sim["bit_exact"] != sim["images"]:
            wrong = sim["images"] - sim["bit_exact"]
            out.update(
                ok=False,
                reason=f"verify: RTL differs from the reference on {wrong} of {sim['images']}"
                " images",
            )
        if synth:
            try:
                res = _resources_within(build, target.family, fmax, synth_seconds)
                total = res["total"]
                out.update({k: total.get(k) for k in ("lut", "ff", "dsp", "bram")})
                out["fmax_mhz"] = total.get("fmax_mhz")
                if res.get("note") and not total.get("fmax_mhz"):
                    out["note"] = res["note"]
                if out["fmax_mhz"]:
                    out["images_per_s"] = out["fmax_mhz"] * 1e6 / out["cycles"]
            except ToolError as exc:
                # The simulation's figures stand; the row says why synthesis has none.
                out["note"] = _failure("synthesis", exc)["reason"]
        out["files"] = _build_files(build)
    except Exception as exc:  # noqa: BLE001 - a tool failure is a row with its reason
        out.update(_failure("verify", exc))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["seconds"] = time.monotonic() - start
    return out


def _build_files(build: Path) -> dict[str, bytes]:
    """A build folder's files but the simulator's object files (large, and rebuilt at will)."""
    return {
        p.relative_to(build).as_posix(): p.read_bytes()
        for p in sorted(build.rglob("*"))
        if p.is_file() and not p.relative_to(build).parts[0].startswith("sim_build")
    }


# ---------------------------------------------------------------------------------------------
# The Pareto front


def pareto_front(rows: Sequence[Mapping[str, Any]], objectives: Sequence[Objective]) -> list[bool]:
    """Which rows no other row dominates (at least as good on every objective, better on one);
    rows with a missing figure are never on the front."""
    values = []
    for r in rows:
        v = [r.get(o.figure) for o in objectives]
        values.append(None if any(x is None for x in v) else v)
    front = []
    for i, vi in enumerate(values):
        if vi is None:
            front.append(False)
            continue
        dominated = False
        for j, vj in enumerate(values):
            if j == i or vj is None:
                continue
            if all(not o.better(a, b) for o, a, b in zip(objectives, vi, vj, strict=True)) and any(
                o.better(b, a) for o, a, b in zip(objectives, vi, vj, strict=True)
            ):
                dominated = True
                break
        front.append(not dominated)
    return front


def _spread(rows: list[dict[str, Any]], n: int, figure: str) -> list[dict[str, Any]]:
    """``n`` rows spread evenly along ``figure`` (its two ends first)."""
    rows = sorted(rows, key=lambda r: r[figure])
    if n >= len(rows):
        return rows
    if n == 1:
        return [rows[len(rows) // 2]]
    picks = sorted({round(i * (len(rows) - 1) / (n - 1)) for i in range(n)})
    return [rows[i] for i in picks]


# ---------------------------------------------------------------------------------------------
# The cluster


@contextmanager
def connect(
    scheduler: str | None = None, workers: int | None = None, *, quiet: bool = True
) -> Iterator[Any]:
    """A ``distributed.Client``: on the scheduler at ``scheduler`` (probed: a UserError within
    :data:`PROBE_SECONDS` when it does not answer), or on a new ``LocalCluster`` with one worker
    process per core (``workers`` to change it), one thread each: the stages are CPU-bound
    Python and hold the GIL."""
    import logging

    from distributed import Client, LocalCluster

    if quiet:
        # The cluster's own info lines would interleave with the progress bar.
        logging.getLogger("distributed").setLevel(logging.ERROR)
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=PROBE_SECONDS)
        except (OSError, TimeoutError, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(
                f"scheduler {scheduler} does not answer within {PROBE_SECONDS:.0f} s ({reason})"
            ) from None
        try:
            yield client
        finally:
            client.close()
        return
    n = workers or os.cpu_count() or 1
    if n < 1:
        raise UserError(f"--workers {n}: give at least one worker")
    cluster = LocalCluster(
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        # Any free port: the default 8787 may be taken (another sweep, a user's own cluster).
        dashboard_address=":0",
        silence_logs=logging.ERROR if quiet else logging.WARNING,
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


# ---------------------------------------------------------------------------------------------
# The sweep


class _Store:
    """The output folder: every result written atomically as it arrives, read back on resume."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def _json(self, path: Path) -> dict[str, Any] | None:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def write_json(self, path: Path, data: Any) -> None:
        atomic_write_bytes(path, json.dumps(data, indent=1, sort_keys=True, default=str).encode())

    def model(self, key: str) -> dict[str, Any] | None:
        meta = self._json(self.out / "models" / f"{key}.json")
        blob = self.out / "models" / f"{key}.pt"
        if meta is None or not blob.is_file():
            return None
        return {**meta, "bytes": blob.read_bytes()}

    def save_model(self, key: str, result: dict[str, Any]) -> None:
        if result.get("ok"):
            atomic_write_bytes(self.out / "models" / f"{key}.pt", result["bytes"])
            # The metadata last: it is what says the model is there.
            meta = {k: v for k, v in result.items() if k != "bytes"}
            self.write_json(self.out / "models" / f"{key}.json", meta)

    def net(self, key: str) -> dict[str, Any] | None:
        meta = self._json(self.out / "nets" / f"{key}.json")
        blob = self.out / "nets" / f"{key}.sfnet"
        if meta is None or (meta.get("ok") and not blob.is_file()):
            return None
        return {**meta, "net": blob.read_bytes()} if meta.get("ok") else meta

    def save_net(self, key: str, result: dict[str, Any]) -> None:
        if _lost(result):
            return  # a lost worker is not the net's fault: a rerun tries again
        if result.get("ok"):
            atomic_write_bytes(self.out / "nets" / f"{key}.sfnet", result["net"])
        meta = {k: v for k, v in result.items() if k != "net"}
        self.write_json(self.out / "nets" / f"{key}.json", meta)

    def point(self, pid: str) -> dict[str, Any] | None:
        return self._json(self.out / "points" / f"{pid}.json")

    def save_point(self, pid: str, record: dict[str, Any]) -> None:
        self.write_json(self.out / "points" / f"{pid}.json", record)

    def save_build(self, pid: str, files: dict[str, bytes]) -> Path:
        """The build folder of a verified point, written beside and renamed into place."""
        final = self.out / "builds" / pid
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{pid}.", dir=final.parent))
        for rel, blob in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(blob)
        if final.exists():
            # Only a build this sweep wrote for the same point (the folder is keyed by it).
            shutil.rmtree(final)
        tmp.rename(final)
        return final


@dataclass
class SweepResult:
    """What a sweep produced: every point's row, the front, the files, the times."""

    rows: list[dict[str, Any]]
    out: Path
    files: dict[str, str]
    seconds: float
    stage_seconds: dict[str, list[float]]
    workers: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"out": str(self.out)}


def _submit(client: Any, fn: Callable, *args: Any, key: str) -> Any:
    # The key is the content's hash: the same work submitted twice (a rerun on the same
    # cluster, two points sharing a net) is one task.
    return client.submit(fn, *args, key=key, retries=RETRIES)


def run_sweep(
    spec: SweepSpec,
    out_dir: str | os.PathLike,
    client: Any,
    *,
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
) -> SweepResult:
    """Run (or resume) ``spec`` on the Dask ``client``; write the table, report and plots."""
    from distributed import as_completed

    log = log or (lambda msg: None)
    out = check_writable(out_dir, folder=True)
    store = _Store(out)
    start = time.monotonic()
    model_key = spec.model_key()
    times: dict[str, list[float]] = {"train": [], "compress": [], "estimate": [], "verify": []}

    trained_future: Any = None

    def trained() -> Any:
        nonlocal trained_future
        if trained_future is None:
            saved = store.model(model_key)
            if saved is not None:
                trained_future = saved
                times["train"].append(saved.get("seconds", 0.0))
            else:
                trained_future = _submit(
                    client,
                    stage_train,
                    spec.model,
                    spec.epochs,
                    spec.seed,
                    spec.data,
                    key=f"sf-train-{model_key}",
                )
        return trained_future

    nets: dict[str, Any] = {}
    net_keys: dict[tuple, str] = {}

    def net_key(p: Point) -> str:
        source = recipe_with(spec.recipe_sources[p.recipe], p.recipe_params)
        return _digest([model_key, source, spec.data])

    def compressed(p: Point) -> Any:
        key = net_key(p)
        net_keys[(p.recipe, p.recipe_params)] = key
        if key not in nets:
            saved = store.net(key)
            if saved is not None:
                nets[key] = saved
                times["compress"].append(saved.get("seconds", 0.0))
            else:
                source = recipe_with(spec.recipe_sources[p.recipe], p.recipe_params)
                nets[key] = _submit(
                    client,
                    stage_compress,
                    trained(),
                    p.recipe,
                    source,
                    spec.data,
                    source.get("seed", 0),
                    key=f"sf-compress-{key}",
                )
        return nets[key]

    records: dict[str, dict[str, Any]] = {}
    pending: dict[Any, Point] = {}
    saved_nets: set[str] = set()
    ac = as_completed()

    verify_key = _digest(asdict(spec.verify))

    def point_key(p: Point) -> str:
        return _digest([net_key(p), spec.target(p).to_dict()])

    def submit_estimate(p: Point) -> None:
        saved = store.point(p.id)
        # Done in an earlier run of the same content (model, data, recipe, Target): an edited
        # model, data set or Target file gives the same point other figures, so it runs again.
        if saved is not None and "estimate" in saved and saved.get("key") == point_key(p):
            records[p.id] = saved
            # Its time still counts in the report's per-stage times.
            times["estimate"].append(saved["estimate"].get("seconds", 0.0))
            if saved.get("verify", {}).get("settings") == verify_key:
                times["verify"].append(saved["verify"].get("seconds", 0.0))
            else:
                saved.pop("verify", None)  # verified with other settings: not this sweep's
            return
        key = f"sf-estimate-{point_key(p)}"
        fut = _submit(client, stage_estimate, compressed(p), spec.target(p), key=key)
        pending[fut] = p
        ac.add(fut)

    def collect(fut: Any) -> dict[str, Any]:
        try:
            return fut.result()
        except Exception as exc:  # noqa: BLE001 - KilledWorker and the like: a row, not the end
            return _failure("cluster", exc)

    def keep_upstream(p: Point) -> None:
        """Write the model and the net a finished point used, once (resume skips them)."""
        key = net_keys[(p.recipe, p.recipe_params)]
        if key in saved_nets:
            return
        saved_nets.add(key)
        tf = trained_future
        if tf is not None and not isinstance(tf, dict) and tf.done():
            result = collect(tf)
            store.save_model(model_key, result)
            if result.get("seconds") and not times["train"]:
                times["train"].append(result["seconds"])
        nf = nets[key]
        if not isinstance(nf, dict) and nf.done():
            result = collect(nf)
            store.save_net(key, result)
            if result.get("seconds"):
                times["compress"].append(result["seconds"])

    def finish(fut: Any, bar: Any, failures: list[int]) -> dict[str, Any]:
        p = pending.pop(fut)
        result = collect(fut)
        keep_upstream(p)
        record = {"id": p.id, "key": point_key(p), "params": p.params(), "estimate": result}
        if not _lost(result):
            store.save_point(p.id, record)
        records[p.id] = record
        if result.get("seconds") and result.get("ok") is not None:
            times["estimate"].append(result["seconds"])
        if not result.get("ok"):
            failures[0] += 1
        bar.update(1, info=f"{failures[0]} failed")
        return result

    points = _sample_points(spec)
    failures = [0]
    with progress(len(points), f"sweep {spec.name}", quiet=quiet) as bar:
        if spec.sampling == "nsga2":
            _run_nsga2(spec, submit_estimate, pending, ac, finish, records, bar, failures)
            points = [Point(**_point_fields(r)) for r in records.values()]
        else:
            for p in points:
                submit_estimate(p)
            bar.update(len(points) - len(pending), info="resumed")
            for fut in ac:
                finish(fut, bar, failures)
        rows = [_row(records[p.id]) for p in points if p.id in records]

        # Verification: a few points spread along the front of the cheap figures.
        ok_rows = [r for r in rows if r["status"] == "ok"]
        front = pareto_front(ok_rows, spec.objectives)
        front_rows = [r for r, f in zip(ok_rows, front, strict=True) if f]
        # One row per design: a design that fits two parts is verified once.
        designs: dict[str, dict[str, Any]] = {}
        for r in front_rows:
            designs.setdefault(records[r["id"]]["estimate"].get("design") or r["id"], r)
        distinct = list(designs.values())
        if spec.verify.pick == "smallest":
            chosen = sorted(distinct, key=lambda r: r["lut"])[: spec.verify.points]
        else:
            chosen = _spread(distinct, spec.verify.points, spec.objectives[0].figure)
        verifying: dict[Any, Point] = {}
        by_id = {p.id: p for p in points}
        for r in chosen:
            p = by_id[r["id"]]
            if "verify" in records[p.id]:
                continue
            net = compressed(p)
            fut = _submit(
                client,
                stage_verify,
                net,
                spec.target(p),
                spec.verify.images,
                spec.verify.synth,
                spec.verify.fmax,
                spec.verify.synth_seconds,
                key=f"sf-verify-{_digest([point_key(p), verify_key])}",
            )
            verifying[fut] = p
        if verifying:
            log(f"verifying {len(verifying)} front points (RTL, Yosys, nextpnr)")
        for fut in as_completed(list(verifying)):
            p = verifying[fut]
            result = collect(fut)
            result["settings"] = verify_key
            files = result.pop("files", None)
            if files:
                result["build"] = str(store.save_build(p.id, files))
            if result.get("seconds"):
                times["verify"].append(result["seconds"])
            design = records[p.id]["estimate"].get("design")
            for other in points:
                # The same design on another part: the same measurements.
                same = other.id == p.id or (
                    design is not None
                    and other.id in records
                    and records[other.id]["estimate"].get("design") == design
                )
                if same:
                    records[other.id] = {**records[other.id], "verify": result}
                    if not _lost(result):
                        store.save_point(other.id, records[other.id])
            log(f"verified {p.label()}: {result.get('reason') or result.get('bit_exact')}")
    rows = [_row(records[p.id]) for p in points if p.id in records]
    ok_rows = [r for r in rows if r["status"] == "ok"]
    for r, f in zip(ok_rows, pareto_front(ok_rows, spec.objectives), strict=True):
        r["pareto"] = f
    workers = len(client.scheduler_info().get("workers", {}))
    result = SweepResult(rows, out, {}, time.monotonic() - start, times, workers)
    result.files = _write_outputs(spec, result)
    return result


def _point_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    params = dict(record["params"])
    recipe = params.pop("recipe")
    hw = tuple((k, v) for k, v in params.items() if k in HARDWARE_AXES)
    rp = tuple((k, v) for k, v in params.items() if k not in HARDWARE_AXES)
    return {"recipe": recipe, "recipe_params": rp, "hardware": hw}


def _sample_points(spec: SweepSpec) -> list[Point]:
    if spec.sampling == "grid":
        return spec.grid()
    if spec.sampling == "random":
        grid = spec.grid()
        return random.Random(spec.sampling_seed).sample(grid, min(spec.samples, len(grid)))
    return [None] * spec.samples  # type: ignore[list-item] - nsga2: chosen as it goes


def _run_nsga2(
    spec: SweepSpec,
    submit: Callable[[Point], None],
    pending: dict[Any, Point],
    ac: Any,
    finish: Callable[..., dict[str, Any]],
    records: dict[str, dict[str, Any]],
    bar: Any,
    failures: list[int],
) -> None:
    """Optuna's NSGA-II over the axes, asking a batch of points per generation of workers and
    telling it the cheap figures (a failed point is a failed trial)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # About five generations within the samples (NSGA-II's first generation is random).
    population = max(4, min(50, spec.samples // 5))
    sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=spec.sampling_seed)
    study = optuna.create_study(
        directions=["maximize" if o.direction == "max" else "minimize" for o in spec.objectives],
        sampler=sampler,
    )
    axes = {"recipe": spec.recipes, **spec.recipe_axes, **spec.hardware_axes}
    batch = population  # a generation at a time, its points side by side on the workers
    asked = 0
    while asked < spec.samples:
        trials = []
        for _ in range(min(batch, spec.samples - asked)):
            trial = study.ask()
            choice = {k: trial.suggest_categorical(k, list(v)) for k, v in axes.items()}
            recipe = choice.pop("recipe")
            trials.append((trial, spec.normalized(recipe, choice)))
            asked += 1
        for _, p in trials:
            if p.id not in records and p not in pending.values():
                submit(p)
                if p.id in records:
                    bar.update(1, info="resumed")
            else:
                bar.update(1, info="proposed again")  # one row, but a sample of the budget
        for fut in ac:
            finish(fut, bar, failures)
        for trial, p in trials:
            est = records[p.id]["estimate"]
            values = [est.get(o.figure) for o in spec.objectives]
            if est.get("ok") and all(v is not None for v in values):
                study.tell(trial, values)
            else:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)


# ---------------------------------------------------------------------------------------------
# Outputs

# Columns of results.csv: the point's parameters come first, then these.
_FIGURE_COLUMNS = (
    "status",
    "reason",
    "accuracy",
    "compression_ratio",
    "bytes",
    "cycles",
    "lut",
    "ff",
    "dsp",
    "bram",
    "utilization",
    "clock_mhz",
    "images_per_s",
    "pareto",
    "verified",
    "bit_exact",
    "cycles_rtl",
    "lut_yosys",
    "ff_yosys",
    "dsp_yosys",
    "bram_yosys",
    "fmax_mhz",
    "images_per_s_measured",
    "verify_note",
    "build",
)


def _row(record: Mapping[str, Any]) -> dict[str, Any]:
    est = record.get("estimate", {})
    row: dict[str, Any] = {"id": record["id"], **record["params"]}
    status = (
        "ok"
        if est.get("ok")
        else ("does-not-fit" if "does not fit" in str(est.get("reason")) else "failed")
    )
    row.update(status=status, reason=est.get("reason", ""), pareto=False, verified=False)
    for k in ("accuracy", "compression_ratio", "bytes", "cycles", "lut", "ff", "dsp", "bram"):
        row[k] = est.get(k)
    row["utilization"] = est.get("utilization")
    row["clock_mhz"] = est.get("clock_mhz")
    row["images_per_s"] = est.get("images_per_s")
    ver = record.get("verify")
    if ver is not None:
        row["verified"] = True
        row["bit_exact"] = ver.get("bit_exact")
        row["cycles_rtl"] = ver.get("cycles")
        for k in ("lut", "ff", "dsp", "bram"):
            row[f"{k}_yosys"] = ver.get(k)
        row["fmax_mhz"] = ver.get("fmax_mhz")
        row["images_per_s_measured"] = ver.get("images_per_s")
        row["verify_note"] = ver.get("reason") or ver.get("note") or ""
        row["build"] = ver.get("build", "")
    return row


def _write_outputs(spec: SweepSpec, result: SweepResult) -> dict[str, str]:
    from .sweep_report import plot_pareto, report_markdown

    out = result.out
    params = ["id", "recipe", *spec.recipe_axes, *spec.hardware_axes]
    columns = params + list(_FIGURE_COLUMNS)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in result.rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    atomic_write_bytes(out / "results.csv", buf.getvalue().encode())
    files = {"table": str(out / "results.csv")}
    files.update(plot_pareto(result.rows, spec.objectives, out))
    text = report_markdown(spec, result, files)
    atomic_write_bytes(out / "report.md", text.encode())
    files["report"] = str(out / "report.md")
    return files
