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
    the typed :class:`~squeezeforge.sim.manifest.Manifest`: format and version, the Target it
    was built for, the engines and their parameters (no memory contents), the per-layer mapping
    (step, engine, cfg, estimated cycles, storage bytes), the ports as the top level's signature
    gives them.

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
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..hw.top import Top, port_list
from ..sim.ir import Net, check_writable, current_umask, load_net, net_to_bytes
from ..sim.manifest import (
    BUILD_FORMAT,
    BUILD_VERSION,
    BuildError,
    EngineEntry,
    Manifest,
    Port,
    StepEntry,
    is_build,
    manifest_checksum,
    read_manifest,
)
from ..sim.rtl import amaranth_to_verilog
from ..sim.storage import layer_storage
from ..sim.target import Target, resolve_target, target_of_net
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

# Inside a temporary build folder until it is renamed into place: marks what a later run may
# remove without asking.
PARTIAL_MARKER = ".squeezeforge-partial"


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
        target=plan.target.to_dict(),
        act_bits=plan.act_bits,
        memory_depth=top.memory_depth,
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
                storage_bytes=layer_storage(s.layer, plan.target, plan.act_bits).bytes(),
                sources=s.sources,
                in_offset=s.in_offset,
                out_offset=s.out_offset,
                in_segments=s.in_segments,
                out_address=s.out_address,
                from_pixels=s.from_pixels,
                to_scores=s.to_scores,
            )
            for s in plan.steps
        ),
        ports=tuple(Port(*p) for p in port_list(top)),
        passes=plan.log,
        split=plan.split,
        interval_estimated=plan.interval_estimated if plan.split is not None else None,
    )


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
    net: Net | str | os.PathLike,
    out_dir: str | os.PathLike,
    target: Target | str | os.PathLike | None = None,
    *,
    force: bool = False,
) -> Manifest:
    """Compile ``net`` for ``target`` (a Target, a preset name or a TOML path; when None, the
    Target the net was compressed for, else the default) and write the build folder
    atomically; returns the manifest.

    See :func:`check_output_folder` for the folders it refuses (``force`` to override).
    """
    check_output_folder(out_dir, force=force)
    if not isinstance(net, Net):
        net = load_net(net)
    if not any(net.compute_layers()):
        raise BuildError(f"net {net.name!r} has no conv or dense layer: nothing to build")
    if target is None:
        target = target_of_net(net.metadata)
    return write_build(compile_net(net, resolve_target(target)), out_dir, force=force)


# Where `resources` keeps its Yosys and nextpnr results (codegen/report_resources.py).
SYNTH_CACHE = "synth_cache"
# Caches kept when a build is replaced: Verilator's builds that simulate reuses
# (sim/netsim.py) and the synthesis results.
_CACHES = ("sim_build", "sim_build_waves", SYNTH_CACHE)


def _keep_simulator_builds(out: Path, new: Path) -> None:
    """Move the previous build's Verilator builds and synthesis results into the new one.
    They are caches keyed by the Verilog text: regenerating the same hardware then simulates
    and reports without recompiling, and a changed design is rebuilt as before."""
    if not (out / "manifest.json").is_file():
        return  # not a build of ours: nothing of it is taken
    for name in _CACHES:
        if (out / name).is_dir():
            (out / name).rename(new / name)


def write_build(plan: Plan, out_dir: str | os.PathLike, *, force: bool = False) -> Manifest:
    """Elaborate a compiled plan and write its build folder atomically; returns the manifest."""
    out = check_output_folder(out_dir, force=force)
    net = plan.net
    top = Top(top_params(plan))
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
        # Hashes of every part: simulate and resources refuse parts of different builds.
        files = {
            p.relative_to(tmp).as_posix(): _sha256(p)
            for p in sorted(tmp.rglob("*"))
            if p.is_file() and p.name != PARTIAL_MARKER
        }
        manifest = dataclasses.replace(manifest, files=files)
        manifest = dataclasses.replace(manifest, checksum=manifest_checksum(manifest.to_dict()))
        # The manifest last: a folder without one is never taken for a finished build.
        (tmp / "manifest.json").write_text(manifest.to_json())
        # mkdtemp makes the folder 0700; a build follows the umask like any other output.
        os.chmod(tmp, 0o777 & ~current_umask())
        _keep_simulator_builds(out, tmp)
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
