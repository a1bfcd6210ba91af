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
    the typed :class:`~squeezeforge.sim.manifest.Manifest`: format and version, the engines
    and their parameters (no memory contents), the per-layer mapping (step, engine, cfg,
    estimated cycles), the ports as the top level's signature gives them.

The folder is written as a temporary sibling and renamed into place; a build that stops half
way leaves the previous build as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..hw.top import Top, port_list
from ..sim.ir import Net, load_net, net_to_bytes
from ..sim.manifest import (
    BUILD_FORMAT,
    BUILD_VERSION,
    BuildError,
    EngineEntry,
    Manifest,
    Port,
    StepEntry,
    read_manifest,
)
from ..sim.rtl import amaranth_to_verilog
from .plan import Plan, compile_net, top_params

__all__ = [
    "BUILD_FORMAT",
    "BUILD_VERSION",
    "BuildError",
    "Manifest",
    "generate",
    "read_manifest",
    "write_build",
]

TOP = "top"


def _plain(value: object) -> object:
    # Parameters hold NumPy integers and tuples here and there; JSON wants plain values.
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value.item() if hasattr(value, "item") else value


def manifest_of(plan: Plan, top: Top) -> Manifest:
    net = plan.net
    return Manifest(
        net=net.name,
        top=TOP,
        act_bits=plan.act_bits,
        buffer_depth=top.buffer_depth,
        input_shape=tuple(net.input_shape),
        input_format=net.input_format.to_dict(),
        output_count=plan.steps[-1].out_count,
        output_format=net.output_format.to_dict(),
        engines=tuple(
            EngineEntry(
                name=name,
                engine=binding.FAMILY,
                params={k: _plain(v) for k, v in binding.params_dict(plan.params[name]).items()},
                storage_bytes=binding.storage_bytes(plan.params[name]),
            )
            for name, binding in plan.engines.items()
        ),
        steps=tuple(
            StepEntry(
                index=s.index,
                layers=s.layers,
                engine=s.engine,
                in_shape=tuple(s.in_shape),
                out_shape=tuple(s.out_shape),
                pool=s.pool,
                cfg={k: int(v) for k, v in s.cfg.items()},
                cycles_estimated=int(s.cycles_estimated),
                cycles_ideal=float(s.cycles_ideal),
            )
            for s in plan.steps
        ),
        ports=tuple(Port(*p) for p in port_list(top)),
        passes=plan.log,
    )


def _hex_lines(words: list[int], width: int | None = None) -> str:
    width = width or max((int(w).bit_length() for w in words), default=1) + 1
    digits = max(1, (width + 3) // 4)
    mask = (1 << (digits * 4)) - 1
    return "".join(f"{int(w) & mask:0{digits}x}\n" for w in words)


def generate(net: Net | str | os.PathLike, out_dir: str | os.PathLike) -> Manifest:
    """Compile ``net`` and write the build folder atomically; returns the manifest."""
    if not isinstance(net, Net):
        net = load_net(net)
    return write_build(compile_net(net), out_dir)


def write_build(plan: Plan, out_dir: str | os.PathLike) -> Manifest:
    """Elaborate a compiled plan and write its build folder atomically; returns the manifest."""
    net = plan.net
    top = Top(top_params(plan))
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
            images = plan.images[name]
            engine_v = amaranth_to_verilog(binding.build(plan.params[name], images), name)
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
        (tmp / "manifest.json").write_text(manifest.to_json())
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
