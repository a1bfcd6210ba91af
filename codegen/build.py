"""``generate``: a compressed net to a build folder of Verilog, memory images and a manifest.

A build folder holds

``top.v``
    the whole accelerator (module ``top``), memory contents included as initial values.
``mem/<engine>.<memory>.hex``
    the same memory contents, one word a line in hex, for inspection or other flows.
``engines/<engine>.v``
    each engine on its own (module ``<engine>``), for per-engine resource reports.
``net.sfnet``
    the net it was built from: the simulator's golden model runs it.
``manifest.json``
    format and version, the Target it was built for, the configuration (engines and their
    parameters), the per-layer mapping (step, engine, cfg, estimated cycles, storage bytes), the
    ports.

The folder is written as a temporary sibling and renamed into place; a build that stops half
way leaves the previous build as it was.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..sim.ir import Net, load_net, net_to_bytes
from ..sim.manifest import BUILD_FORMAT, BUILD_VERSION, BuildError, read_manifest
from ..sim.rtl import amaranth_to_verilog
from ..sim.target import Target, resolve_target
from .accelerator import Accelerator
from .plan import Plan, compile_net

__all__ = [
    "BUILD_FORMAT",
    "BUILD_VERSION",
    "BuildError",
    "generate",
    "read_manifest",
    "write_build",
]

TOP = "top"


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: _jsonable(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if f.name not in ("init", "images")
        }
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return obj


def manifest_of(plan: Plan, top: Accelerator) -> dict:
    net = plan.net
    return {
        "format": BUILD_FORMAT,
        "version": BUILD_VERSION,
        "net": net.name,
        "top": TOP,
        "target": plan.target.to_dict(),
        "act_bits": plan.act_bits,
        "buffer_depth": top.buffer_depth,
        "input": {"shape": list(net.input_shape), "format": net.input_format.to_dict()},
        "output": {"count": plan.steps[-1].out_count, "format": net.output_format.to_dict()},
        "engines": {
            name: {"kind": name, "params": _jsonable(plan.params[name])} for name in plan.engines
        },
        "steps": [
            {
                "index": s.index,
                "layers": list(s.layers),
                "engine": s.engine,
                "in_shape": list(s.in_shape),
                "out_shape": list(s.out_shape),
                "pool": s.pool,
                "cfg": s.cfg,
                "cycles_estimated": s.cycles_estimated,
                "cycles_ideal": s.cycles_ideal,
                "storage_bytes": plan.engines[s.engine]
                .storage(s, plan.target, plan.act_bits)
                .bytes(),
            }
            for s in plan.steps
        ],
        "cycles_estimated": sum(s.cycles_estimated for s in plan.steps),
        "ports": {
            "start": "in, pulse: run one inference",
            "i_pixel": f"stream in (valid/ready/payload), signed {plan.act_bits} bits, C,H,W",
            "o_score": f"stream out (valid/ready/payload), signed {plan.act_bits} bits",
            "busy": "out",
            "done": "out, pulse after the last score",
            "cycles": "out, 32 bits: cycles of the last inference",
            "step": "out: index of the running step",
            "tap": "out (valid, data): every activation written between steps",
        },
        "passes": list(plan.log),
    }


def _hex_lines(words: list[int], width: int | None = None) -> str:
    width = width or max((int(w).bit_length() for w in words), default=1) + 1
    digits = max(1, (width + 3) // 4)
    mask = (1 << (digits * 4)) - 1
    return "".join(f"{int(w) & mask:0{digits}x}\n" for w in words)


def generate(
    net: Net | str | os.PathLike,
    out_dir: str | os.PathLike,
    target: Target | str | os.PathLike | None = None,
) -> dict:
    """Compile ``net`` for ``target`` (a Target, a preset name or a TOML path; the default
    Target when None) and write the build folder atomically; returns the manifest."""
    if not isinstance(net, Net):
        net = load_net(net)
    return write_build(compile_net(net, resolve_target(target)), out_dir)


def write_build(plan: Plan, out_dir: str | os.PathLike) -> dict:
    """Elaborate a compiled plan and write its build folder atomically; returns the manifest."""
    net = plan.net
    top = Accelerator(plan)
    verilog = amaranth_to_verilog(top, TOP)
    manifest = manifest_of(plan, top)

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "top.v").write_text(verilog)
        (tmp / "net.sfnet").write_bytes(net_to_bytes(net))
        (tmp / "engines").mkdir()
        for name, binding in plan.engines.items():
            # Each engine alone, with its memory contents, for per-engine resource reports.
            engine_v = amaranth_to_verilog(binding.build(plan.params[name]), name)
            (tmp / "engines" / f"{name}.v").write_text(engine_v)
        (tmp / "mem").mkdir()
        for engine, images in plan.images.items():
            for mem, words in images.items():
                words = np.asarray(words, dtype=object)
                if words.ndim == 2:  # one memory per PE
                    for k, row in enumerate(words):
                        path = tmp / "mem" / f"{engine}.{mem}.pe{k}.hex"
                        path.write_text(_hex_lines([int(w) for w in row]))
                else:
                    path = tmp / "mem" / f"{engine}.{mem}.hex"
                    path.write_text(_hex_lines([int(w) for w in words]))
        # The manifest last: a folder without one is never taken for a finished build.
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
        try:
            tmp.rename(out)
        except BaseException:
            if old is not None and not out.exists():
                old.rename(out)  # put the previous build back
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
