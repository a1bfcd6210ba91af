"""Throughput of the bit-accurate reference model on the default digits CNN (images/s, one core).

    python scripts/bench_reference.py [--net NET.sfnet] [--images 4000] [--json]

Without --net it times a net of the default CNN's shape (conv 1->6, pool, conv 6->16, pool,
fc 64->120->84->10, 8-bit) with random weights: the integer work, and so the time, does not
depend on the values. Target: >= 2,000 images/s on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import time

# One core, as the target says; set before NumPy loads its BLAS.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402

from squeezeforge.sim.ir import Conv2d, Dense, Flatten, MaxPool2d, Net, load_net  # noqa: E402
from squeezeforge.sim.numerics import FixedFormat, FixedWeights  # noqa: E402
from squeezeforge.sim.random_layers import (  # noqa: E402
    random_activations,
    random_stored_weights,
)
from squeezeforge.sim.reference import run_net  # noqa: E402


def digits_cnn_shaped(rng: np.random.Generator) -> Net:
    a = FixedFormat(8, 4)
    w = FixedWeights(8, 7)

    def conv(name: str, c: int, m: int, inp: FixedFormat) -> Conv2d:
        return Conv2d(
            name,
            c,
            m,
            (3, 3),
            1,
            1,
            inp,
            w,
            a,
            True,
            random_stored_weights(rng, w, (m, c, 3, 3)),
            np.zeros(m, np.int64),
        )

    def fc(name: str, i: int, o: int, relu: bool) -> Dense:
        return Dense(
            name, i, o, a, w, a, relu, random_stored_weights(rng, w, (o, i)), np.zeros(o, np.int64)
        )

    inp = FixedFormat(8, 6)
    layers = (
        conv("conv1", 1, 6, inp),
        MaxPool2d("pool1"),
        conv("conv2", 6, 16, a),
        MaxPool2d("pool2"),
        Flatten("flatten"),
        fc("fc1", 64, 120, True),
        fc("fc2", 120, 84, True),
        fc("fc3", 84, 10, False),
    )
    x = random_activations(rng, inp, (1, 1, 8, 8))
    return Net(
        "digits-cnn-shaped",
        (1, 8, 8),
        inp,
        layers,
        x,
        np.zeros(1, np.int64),
        np.zeros((1, 10), np.int64),
    )


def measure(net: Net, images: int, batch: int, repeats: int = 3) -> float:
    rng = np.random.default_rng(0)
    x = random_activations(rng, net.input_format, (images, *net.input_shape))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(0, images, batch):
            run_net(net, x[i : i + batch])
        best = min(best, time.perf_counter() - t0)
    return images / best


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--net", help="a .sfnet file (default: the digits-CNN shape, random weights)")
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    net = load_net(args.net) if args.net else digits_cnn_shaped(np.random.default_rng(1))
    rows = [(b, measure(net, args.images, b)) for b in (1, 64, 512)]
    if args.json:
        print(
            json.dumps(
                {"net": net.name, "images_per_s": {str(b): r for b, r in rows}, "target": 2000}
            )
        )
        return
    print(f"reference model on {net.name}, one core, {args.images} images")
    print("| batch | images/s | target |")
    print("|------:|---------:|-------:|")
    for b, r in rows:
        print(f"| {b} | {r:,.0f} | 2,000 |")


if __name__ == "__main__":
    main()
