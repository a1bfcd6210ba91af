"""Verilator's ``OBJCACHE`` hook: the compiled run-time library, kept between builds.

Every Verilator build compiles the same run-time library (``verilated.cpp``,
``verilated_vpi.cpp``, ...) with the same flags before its model: about ten seconds of a
build's thirty at ``-O0``. ``verilated.mk`` runs each compile as ``$(OBJCACHE) $(CXX) ...``, the
hook meant for ccache; :mod:`squeezeforge.sim.rtl` points it at this file, which keeps the
objects of the library's sources (those in Verilator's ``include`` folder) in a cache folder,
keyed by the compile command and the source, and runs every other compile (the model's, which
differ from build to build) unchanged.

Run by make with the standard library only (no package import, so each compile starts fast)::

    python -I objcache.py CACHE_DIR INCLUDE_DIR c++ -Os ... -c -o verilated.o .../verilated.cpp
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def cached_compile(cache: Path, include: Path, command: list[str]) -> int:
    """Run ``command`` (a compiler call) or, for a run-time library source already compiled
    with the same command, copy its object (and make's dependency file) from ``cache``."""
    sources = [Path(a) for a in command if a.endswith(".cpp")]
    if "-c" not in command or "-o" not in command or len(sources) != 1:
        return subprocess.call(command)
    if sources[0].resolve().parent != include.resolve():
        return subprocess.call(command)
    out = Path(command[command.index("-o") + 1])
    dep = out.with_suffix(".d")
    key = hashlib.sha256(
        json.dumps([a for a in command if a != str(out)]).encode() + sources[0].read_bytes()
    ).hexdigest()[:32]
    entry = cache / key
    if (entry / "o").is_file():
        shutil.copyfile(entry / "o", out)
        if (entry / "d").is_file():
            shutil.copyfile(entry / "d", dep)
        return 0
    code = subprocess.call(command)
    if code == 0:
        try:
            _store(cache, entry, out, dep)
        except OSError:
            pass  # a cache that cannot be written (a full disk, no permission) is only slower
    return code


def _store(cache: Path, entry: Path, out: Path, dep: Path) -> None:
    # Filled aside, then renamed into place: a parallel build sees a whole entry or none.
    cache.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=cache, prefix=".new-"))
    shutil.copyfile(out, scratch / "o")
    if dep.is_file():
        shutil.copyfile(dep, scratch / "d")
    try:
        scratch.rename(entry)
    except OSError:  # another build stored it first
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(cached_compile(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]))
