"""How good a net's outputs are: accuracy for classes, error metrics for real-valued targets.

One definition for every stage that scores outputs (the compression report, the reference and
RTL runs, the Python API). The task follows from the targets themselves: integer class indices
(N,) are classification, scored by top-1 accuracy (the first maximum wins, as ``argmax``); float
targets are regression, scored by the mean squared error and the largest absolute error of the
outputs as real values.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["Task", "agreement", "describe", "predictions", "quality", "task_of"]

Task = Literal["classification", "regression"]


def task_of(targets: np.ndarray) -> Task:
    """``"regression"`` for float targets, ``"classification"`` for integer class indices."""
    return "regression" if np.asarray(targets).dtype.kind == "f" else "classification"


def predictions(outputs: np.ndarray) -> np.ndarray:
    """Class predictions from scores (first maximum wins, as argmax)."""
    outputs = np.asarray(outputs)
    return np.argmax(outputs.reshape(outputs.shape[0], -1), axis=1)


def quality(outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """``{"accuracy": ...}`` for class targets; ``{"mse": ..., "max_abs_error": ...}`` of the
    real-valued ``outputs`` against float targets (both flattened per sample)."""
    outputs = np.asarray(outputs)
    targets = np.asarray(targets)
    if task_of(targets) == "classification":
        return {"accuracy": float(np.mean(predictions(outputs) == targets))}
    err = outputs.reshape(len(outputs), -1).astype(np.float64) - targets.reshape(
        len(targets), -1
    ).astype(np.float64)
    return {"mse": float(np.mean(err**2)), "max_abs_error": float(np.max(np.abs(err)))}


def agreement(a: np.ndarray, b: np.ndarray, task: Task) -> float:
    """Share of samples on which two models agree: the same class, or (regression) the very
    same outputs."""
    a, b = np.asarray(a), np.asarray(b)
    if task == "classification":
        return float(np.mean(predictions(a) == predictions(b)))
    same = a.reshape(len(a), -1) == b.reshape(len(b), -1)
    return float(np.mean(np.all(same, axis=1)))


def describe(q: dict[str, float]) -> str:
    """A quality in a few words: ``accuracy 96.67%`` or ``MSE 0.0123, max abs error 0.25``."""
    if "accuracy" in q:
        return f"accuracy {100 * q['accuracy']:.2f}%"
    return f"MSE {q['mse']:.4g}, max abs error {q['max_abs_error']:.4g}"
