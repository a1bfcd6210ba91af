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
    format and version, the configuration (engines and their parameters), the per-layer mapping
    (step, engine, cfg, estimated cycles), the ports.

``manifest.json`` also records the SHA-256 of every other file and a checksum of itself, so
``simulate`` and ``resources`` refuse a folder whose parts do not belong together.

The folder is written as a temporary sibling and renamed into place; a build that stops half
way leaves the previous build as it was, and its temporary folder is removed by the next run.
``generate`` writes only into a folder that is absent, empty or an earlier build: anything else
(a user's folder, a file, a read-only folder) is refused unless ``force``; a file is never
replaced by a folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..sim.ir import Net, check_writable, current_umask, load_net, net_to_bytes
from ..sim.manifest import (
    BUILD_FORMAT,
    BUILD_VERSION,
    BuildError,
    is_build,
    manifest_checksum,
    read_manifest,
)
from ..sim.rtl import amaranth_to_verilog
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

# Inside a temporary build folder until it is renamed into place: marks what a later run may
# remove without asking.
PARTIAL_MARKER = ".squeezeforge-partial"


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


def check_output_folder(out_dir: str | os.PathLike, *, force: bool = False) -> Path:
    """Refuse, with one line, an ``out_dir`` that a build must not replace; returns its path.

    A build may replace a folder that is absent, empty or an earlier build (it has a build
    manifest). ``force`` also allows any other folder, but never a file, the current folder or
    one of its parents.
    """
    out = Path(out_dir)
    if str(out_dir) == "":
        raise BuildError("an empty build folder name was given")
    resolved = out.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise BuildError(
            f"{out_dir}: refusing to replace the current folder or one of its parents;"
            " name a new build folder"
        )
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise BuildError(f"{out}: exists and is not a folder; a build never replaces a file")
    if out.is_dir() and not is_build(out) and any(out.iterdir()):
        if not force:
            raise BuildError(
                f"{out}: folder is not empty and is not a squeezeforge build; refusing to"
                " replace it (choose another folder, or --force to replace it)"
            )
    if out.is_dir() and not out.stat().st_mode & 0o222 and not force:
        # Root may write anyway; a folder the user made read-only says "keep this".
        raise BuildError(f"{out}: folder is read-only; refusing to replace it (--force overrides)")
    check_writable(resolved.parent, folder=True)
    return out


def clean_stale(out_dir: str | os.PathLike) -> list[Path]:
    """Remove the temporary folders that killed runs left beside ``out_dir``; returns them.

    Only folders that carry :data:`PARTIAL_MARKER`, or the ``.NAME.old.*`` copy of an earlier
    build, are removed: a user's own hidden folder of a similar name is left alone.
    """
    out = Path(out_dir).resolve()
    removed = []
    if not out.parent.is_dir():
        return removed
    for sibling in out.parent.glob(f".{_glob_escape(out.name)}.*"):
        if sibling.is_symlink() or not sibling.is_dir():
            continue
        partial = (sibling / PARTIAL_MARKER).is_file()
        # An earlier build set aside, or the empty reservation for one.
        old = sibling.name.startswith(f".{out.name}.old.") and (
            is_build(sibling) or not any(sibling.iterdir())
        )
        if partial or old:
            shutil.rmtree(sibling, ignore_errors=True)
            removed.append(sibling)
    return removed


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def generate(
    net: Net | str | os.PathLike, out_dir: str | os.PathLike, *, force: bool = False
) -> dict:
    """Compile ``net`` and write the build folder atomically; returns the manifest.

    See :func:`check_output_folder` for the folders it refuses (``force`` to override).
    """
    check_output_folder(out_dir, force=force)
    if not isinstance(net, Net):
        net = load_net(net)
    if not any(net.compute_layers()):
        raise BuildError(f"net {net.name!r} has no conv or dense layer: nothing to build")
    return write_build(compile_net(net), out_dir, force=force)


def write_build(plan: Plan, out_dir: str | os.PathLike, *, force: bool = False) -> dict:
    """Elaborate a compiled plan and write its build folder atomically; returns the manifest."""
    out = check_output_folder(out_dir, force=force)
    net = plan.net
    top = Accelerator(plan)
    verilog = amaranth_to_verilog(top, TOP)
    manifest = manifest_of(plan, top)

    clean_stale(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / PARTIAL_MARKER).write_text("an unfinished squeezeforge build; safe to remove\n")
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
        # Hashes of every part: simulate and resources refuse parts of different builds.
        manifest["files"] = {
            p.relative_to(tmp).as_posix(): _sha256(p)
            for p in sorted(tmp.rglob("*"))
            if p.is_file() and p.name != PARTIAL_MARKER
        }
        manifest["checksum"] = manifest_checksum(manifest)
        # The manifest last: a folder without one is never taken for a finished build.
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        # mkdtemp makes the folder 0700; a build follows the umask like any other output.
        os.chmod(tmp, 0o777 & ~current_umask())
        old = None
        if out.exists():
            # A fresh name: a user's own ".NAME.old" is never overwritten. Renaming a folder
            # onto an empty one is allowed, so mkdtemp's folder is the reservation.
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            try:
                out.rename(old)
            except BaseException:
                old.rmdir()
                raise
        try:
            tmp.rename(out)
        except BaseException:
            if old is not None and not out.exists():
                old.rename(out)  # put the previous build back
            raise
        (out / PARTIAL_MARKER).unlink()
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):  # a full disk, a folder gone read-only half way
            raise BuildError(f"cannot write the build {out}: {exc.strerror or exc}") from None
        raise
    return manifest
