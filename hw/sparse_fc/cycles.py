"""Cycle model of the EIE-style sparse FC unit (:class:`squeezeforge.hw.sparse_fc.engine.SparseFC`).

The model follows the unit's micro-architecture cycle by cycle, as recurrences over the non-zero
activations (NumPy-vectorized over the PEs), and gives the same count as the RTL from ``start``
to ``done`` when ``i_act`` offers an activation every cycle and ``o_act`` is always ready.

Timing rules (cycle ``t0`` holds ``start``):

- Input ``i`` is taken from the input register no earlier than ``t0 + 1 + INPUT_LATENCY + i``:
  one per cycle, zeros included (zero skipping drops them without a broadcast). The ``m``-th
  non-zero activation is broadcast at ``B[m]``, once every PE's queue memory holds fewer than
  ``D`` columns. A column moves from the memory to the queue's output register at
  ``R[k, m] = max(B[m] + COLUMN_LATENCY - 1, P[k, m - 1])`` (the register is free, or popped in
  that cycle); the memory does not see a move of the same cycle, so
  ``B[m] >= R[k, m - D] + 1`` for every PE ``k``.
- PE ``k`` pops it into its pointer stage at ``P[k, m] = max(R[k, m] + 1, A[k, m - 1])`` (the
  pointer stage is free, or its column moves on in that cycle) and moves it into the column
  stage at ``A[k, m] = max(P[k, m] + POINTER_LATENCY, A[k, m - 1] + s[k, m - 1])`` where
  ``s = max(n, 1)`` and ``n`` is the number of entries (padding included) of that column in the
  PE: entries issue one per cycle from ``A + 1``, the next column moves in during the cycle of
  the last issue, and an empty column holds the column stage for one cycle.
- A PE is idle ``DRAIN_AFTER_ISSUE`` cycles after its last issue (the pipeline drains) and
  ``DRAIN_AFTER_EMPTY_COLUMN`` cycles after its last column moved into the column stage,
  whichever is later (an empty last column issues nothing).
- The output phase starts the cycle after all inputs are in and all PEs are idle, reads one
  row per cycle, and ``done`` comes ``OUTPUT_TAIL`` cycles after the last row is read.

The latencies are the unit's own constants (:class:`SparseFC`), not copies.

Load balance as in EIE: over the compute phase (``start`` to the end of accumulation), a PE's
busy cycles are the entries it processes; efficiency ``= 1 - bubble / total`` with the mean
bubble over the PEs. The ideal bound is the non-zero work (non-zero weights times non-zero
activations) divided by N.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...sim.ir import CscMatrix, Dense, SparseDense, csc_entry_counts
from .engine import SparseFC

__all__ = [
    "SparseFCCycles",
    "as_csc",
    "sparse_fc_cycles",
    "sparse_fc_cycles_from_counts",
]


@dataclass(frozen=True)
class SparseFCCycles:
    """Cycles of one layer on the sparse FC unit.

    Attributes
    ----------
    cycles
        ``start`` to ``done``, as the RTL measures them.
    compute_cycles
        ``start`` to the end of accumulation (all inputs in, every PE idle).
    output_cycles
        The output phase: ``cycles - compute_cycles``.
    busy
        Entries processed per PE (padding included).
    bubble_cycles
        Mean over the PEs of compute cycles without an entry to process.
    efficiency
        Load-balance efficiency ``1 - bubble_cycles / compute_cycles``.
    work
        Non-zero work: products of a non-zero weight and a non-zero activation.
    ideal_cycles
        ``work / n_pe``: a perfectly balanced unit with no overhead.
    dense_cycles
        A dense matrix-vector product on the same N PEs, one MAC per PE per cycle.
    n_pe, fifo_depth
        The unit modelled.
    """

    cycles: int
    compute_cycles: int
    output_cycles: int
    busy: np.ndarray
    bubble_cycles: float
    efficiency: float
    work: int
    ideal_cycles: float
    dense_cycles: int
    n_pe: int
    fifo_depth: int

    @property
    def speedup_over_dense(self) -> float:
        """Dense cycles over sparse compute cycles."""
        return self.dense_cycles / self.compute_cycles

    @property
    def over_ideal(self) -> float:
        """Compute cycles over the ideal bound (EIE's actual over theoretical)."""
        return self.compute_cycles / self.ideal_cycles if self.ideal_cycles else float("inf")


def as_csc(layer: Dense | SparseDense, n_pe: int, index_bits: int) -> CscMatrix:
    """The layer's matrix in CSC form for ``n_pe`` PEs and ``index_bits`` relative indices.

    A :class:`Dense` layer is encoded at full density, a :class:`SparseDense` one with its zeros
    skipped: the layout is the unit's, so the caller's PE count and index width choose it.
    """
    if not isinstance(layer, Dense | SparseDense):
        raise TypeError(f"the sparse FC unit runs dense and sparse_dense layers, not {layer!r}")
    return CscMatrix.encode(layer.weight, n_pe, index_bits, name=layer.name)


def sparse_fc_cycles_from_counts(
    counts: np.ndarray,
    x_nonzero: np.ndarray,
    *,
    out_features: int,
    fifo_depth: int = 8,
    work: int | None = None,
) -> SparseFCCycles:
    """Cycles from the entry counts per PE and column and the non-zero pattern of the input.

    Parameters
    ----------
    counts : ndarray, shape (n_pe, in_features)
        Entries per PE and column (:func:`~squeezeforge.sim.ir.csc_entry_counts`).
    x_nonzero : ndarray of bool, shape (in_features,)
        Which activations are non-zero.
    out_features : int
        Rows read out in the output phase.
    fifo_depth : int
        Activation FIFO depth per PE.
    work : int or None
        Non-zero work for the ideal bound; the entries of non-zero columns when None.
    """
    counts = np.asarray(counts, dtype=np.int64)
    n_pe, in_f = counts.shape
    if fifo_depth < 1:
        raise ValueError(f"fifo_depth must be >= 1, got {fifo_depth}")
    x_nonzero = np.asarray(x_nonzero, dtype=bool)
    if x_nonzero.shape != (in_f,):
        raise ValueError(f"input pattern has shape {x_nonzero.shape}, the layer takes ({in_f},)")
    cols = np.flatnonzero(x_nonzero)
    n_nz = cols.size
    t0 = 0
    # Inputs are taken (dropped or broadcast) from the input register, INPUT_LATENCY cycles
    # after the rules below would take them straight from i_act.
    t_in = t0 + SparseFC.INPUT_LATENCY
    n = counts[:, cols]  # (n_pe, n_nz)
    busy = n.sum(axis=1)
    if work is None:
        work = int(busy.sum())
    if n_nz == 0:
        last_accept = t_in + in_f
        compute_end = last_accept + 1
    else:
        s = np.maximum(n, 1)
        pops = np.empty((n_pe, n_nz), dtype=np.int64)
        # Cycles the columns move into the queues' output registers; the move of the column D
        # places back frees the queue memory's slot (the queue-full condition).
        moves = np.empty((n_pe, n_nz), dtype=np.int64)
        # Cycles the columns move into the column stage, whose entries issue from the next.
        starts = np.empty((n_pe, n_nz), dtype=np.int64)
        to_register = SparseFC.COLUMN_LATENCY - 1
        broadcast = t_in + 1 + int(cols[0])
        moves[:, 0] = broadcast + to_register
        pops[:, 0] = moves[:, 0] + 1
        starts[:, 0] = pops[:, 0] + SparseFC.POINTER_LATENCY
        d = fifo_depth
        for m in range(1, n_nz):
            broadcast += int(cols[m] - cols[m - 1])
            if m >= d:
                broadcast = max(broadcast, int(moves[:, m - d].max()) + 1)
            np.maximum(pops[:, m - 1], broadcast + to_register, out=moves[:, m])
            np.maximum(starts[:, m - 1], moves[:, m] + 1, out=pops[:, m])
            np.maximum(
                starts[:, m - 1] + s[:, m - 1],
                pops[:, m] + SparseFC.POINTER_LATENCY,
                out=starts[:, m],
            )
        last_accept = broadcast + (in_f - 1 - int(cols[-1]))
        # The pipeline drains after the last entry issued, which may belong to an earlier
        # column than the last one moved in (an empty column moved in during that issue).
        last_issue = np.where(n > 0, starts + n, np.iinfo(np.int64).min // 2).max(axis=1)
        idle = np.maximum(
            starts[:, -1] + SparseFC.DRAIN_AFTER_EMPTY_COLUMN,
            last_issue + SparseFC.DRAIN_AFTER_ISSUE,
        )
        compute_end = max(last_accept + 1, int(idle.max()))
    # The output phase reads row i in cycle compute_end + 1 + i.
    done = compute_end + out_features + SparseFC.OUTPUT_TAIL
    compute = compute_end - t0
    mean_busy = float(busy.mean())
    rows_per_pe = -(-out_features // n_pe)
    return SparseFCCycles(
        cycles=done - t0,
        compute_cycles=compute,
        output_cycles=done - compute_end,
        busy=busy,
        bubble_cycles=compute - mean_busy,
        efficiency=mean_busy / compute,
        work=int(work),
        ideal_cycles=work / n_pe,
        dense_cycles=rows_per_pe * in_f,
        n_pe=n_pe,
        fifo_depth=fifo_depth,
    )


def sparse_fc_cycles(
    layer: Dense | SparseDense,
    x: np.ndarray,
    *,
    n_pe: int | None = None,
    fifo_depth: int = 8,
    index_bits: int | None = None,
) -> SparseFCCycles:
    """Cycles of ``layer`` on input vector ``x`` on a unit with ``n_pe`` PEs.

    Parameters
    ----------
    layer
        A :class:`SparseDense` or :class:`Dense` layer.
    x : ndarray, shape (in_features,)
        One input vector (integers; only its zero pattern matters).
    n_pe, index_bits
        The unit's PE count and relative-index width (a Target's ``fc_pes`` and
        ``index_bits``); required.
    fifo_depth
        Activation FIFO depth per PE.
    """
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"x must be one input vector, got shape {x.shape}")
    if not isinstance(layer, Dense | SparseDense):
        raise TypeError(f"the sparse FC unit runs dense and sparse_dense layers, not {layer!r}")
    if n_pe is None or index_bits is None:
        raise ValueError(
            "the cycle model needs n_pe and index_bits (the Target's fc_pes and index_bits)"
        )
    stored = np.asarray(layer.weight)
    counts = csc_entry_counts(stored, n_pe, index_bits)
    nz_per_col = np.count_nonzero(stored, axis=0)
    work = int(nz_per_col[x != 0].sum())
    return sparse_fc_cycles_from_counts(
        counts,
        x != 0,
        out_features=layer.out_features,
        fifo_depth=fifo_depth,
        work=work,
    )
