"""Ctrl-C at any moment: one line on stderr, exit status 130, nothing half-written left.

Finding F9 of issue 10: an interrupt while the libraries load printed a 36-line traceback, one
during generate some 30 lines of Amaranth warnings. These run the console script in a process
of its own, since the signal has to arrive while it loads.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from squeezeforge.sim.ir import save_net
from squeezeforge.sim.random_layers import random_net


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("net") / "n.sfnet"
    return save_net(random_net(np.random.default_rng(0), n_tests=2), path)


# 0.3 s: Python is up, NumPy, PyTorch and Amaranth are loading. 4 s: generate is elaborating
# (the whole command takes several seconds more on this net).
@pytest.mark.parametrize("delay", [0.3, 4.0])
def test_interrupt_is_one_line_and_130(net: Path, tmp_path: Path, delay: float) -> None:
    out = tmp_path / "b"
    proc = subprocess.Popen(
        [sys.executable, "-m", "squeezeforge.cli", "generate", str(net), "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)
    assert proc.poll() is None, "the command ended before the interrupt; use a larger net"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [
        next(line for line in err.splitlines() if line.endswith(": interrupted"))
    ], err
    assert "Traceback" not in err and "UnusedElaboratable" not in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary build folder either
