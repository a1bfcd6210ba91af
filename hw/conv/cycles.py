"""Cycle model of the convolution engine (:class:`squeezeforge.hw.conv.engine.ConvEngine`).

A pure function of the layer's shape and the array's shape: the cycles from the ``start`` pulse
to ``done`` when ``i_act`` is always valid and ``o_act`` always ready. It follows the engine's
schedule event by event, one filter block at a time:

- **load**: the ``C*H*W`` input words arrive one per cycle (cycles 1..C*H*W);
- **setup**, overlapped with the load: ``out_h``/``out_w`` by repeated subtraction of the stride
  and three shift-and-add products, ``max(bits(H), bits(s), bits(p), (H+2p-kh)//s,
  (W+2p-kw)//s)`` iterations; then the pixel cursor fills the first fold's ``rows`` pixels;
- **folds**: ``ceil(M/cols)`` filter blocks of ``ceil(E/rows)`` folds, one GEMM step per cycle;
  consecutive folds start ``max(K, rows + 1)`` cycles apart (the cursor writes one pixel of the
  next fold per cycle, so a fold shorter than ``rows + 1`` steps waits for it);
- **drain** of a filter block ends ``rows + cols + 9`` cycles after its last step (the operand
  fetch's, the PEs', the drain's, the requantizer's and the pool writer's latencies, read from
  the components);
- **emission** of a block (``lanes * out_h * out_w`` reads, ``lanes * (out_h // 2) *
  (out_w // 2)`` with pooling: one per output) starts
  when it is drained and the previous block is out; block ``b`` does not start computing before
  block ``b - 2`` is out (they share half of the transpose buffer);
- **done** a few cycles after the last read (memory read, output queue, handshake).

With two input banks the next run's compute begins while this run's last block is emitted:
:func:`conv_run` places a run on a time line after the run before it on the engine.

The pipeline latencies are the engine's own constants (:class:`ConvEngine`), not copies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import prod
from typing import Protocol

from ...sim.ir import Conv2d
from ..arith import Requantizer
from .engine import ConvEngine, FoldDrain, OutputEmitter, PoolWriter

__all__ = ["ArrayShape", "ConvCycles", "ConvRun", "conv_cycles", "conv_run", "conv_stream_dones"]


def _drain_after_last_step() -> int:
    """From a block's last step to its drained count, beyond the skew of its last sum (row
    rows - 1 of column cols - 1, hence the - 2 against rows + cols): the fold event's way to
    the drain, the drain, the requantizer, the pool writer, and the count registering the last
    write."""
    return (
        ConvEngine.FOLD_EVENT_DELAY
        + FoldDrain.LATENCY
        + Requantizer.latency_of(ConvEngine.REQUANT_PIPELINED)
        + PoolWriter.LATENCY
        + 1
        - 2
    )


def _done_after_last_read() -> int:
    """From the last transpose-buffer read to done: the read, the output queue (a payload
    leaves it the cycle after it enters), and done after the last transfer."""
    return OutputEmitter.READ_LATENCY + 1 + 1


class ArrayShape(Protocol):
    """What the model reads of the engine's parameters."""

    rows: int
    cols: int


@dataclass(frozen=True)
class ConvCycles:
    """Cycle model result of one conv layer on the engine.

    Attributes
    ----------
    cycles
        From ``start`` to ``done``.
    macs
        Multiply-accumulates of the layer.
    utilization
        ``macs / (cycles * rows * cols)``.
    utilization_compute
        The same without the input load phase: ``macs / ((cycles - load_cycles) * PEs)``.
    ideal_cycles
        The bound ``macs / PEs``.
    load_cycles
        ``C * H * W``: input words through ``i_act``.
    folds
        Folds of the GEMM (filter blocks x pixel blocks).
    filter_blocks, pixel_blocks
        ``ceil(M / cols)`` and ``ceil(E / rows)``.
    fold_cycles
        Cycles between fold starts: ``max(K, rows + 1)``.
    steps
        ``K = kh * kw * in_channels`` GEMM steps per fold.
    """

    cycles: int
    macs: int
    utilization: float
    utilization_compute: float
    ideal_cycles: float
    load_cycles: int
    folds: int
    filter_blocks: int
    pixel_blocks: int
    fold_cycles: int
    steps: int


@dataclass(frozen=True)
class ConvRun:
    """One run of the engine on a common time line (:func:`conv_run`), in cycles.

    Attributes
    ----------
    began
        Its compute began: the cycle its ``start`` was taken, or with two banks the cycle it
        left the queue.
    last_word
        Its last input word arrived.
    emitted
        Each filter block's last transpose-buffer read.
    computed
        Its last block is drained: the engine may begin the next run's compute.
    latched
        The emitter began its first block.
    done
        Its ``done`` pulse.
    """

    began: int
    last_word: int
    emitted: tuple[int, ...]
    computed: int
    latched: int
    done: int

    def next_began(self, taken: int) -> int:
        """The cycle a run taken at ``taken`` (two banks) begins its compute after this one:
        once this run's last block is drained and the emitter has begun this run."""
        return max(taken, self.computed, self.latched + 1)


def conv_run(
    layer: Conv2d,
    in_shape: Sequence[int],
    params: ArrayShape,
    pool: bool = False,
    *,
    began: int = 0,
    last_word: int | None = None,
    before: ConvRun | None = None,
) -> ConvRun:
    """The run of ``layer`` whose compute begins at cycle ``began``, after the run ``before``
    on the same engine (None: the engine was idle), with its last input word at ``last_word``
    (None: one word a cycle from the cycle after ``began``).

    A block waits for the transpose buffer half it shares with the block two before it (which
    may be ``before``'s), and the run's first block is emitted only after ``before`` is done.
    """
    rows, cols = int(params.rows), int(params.cols)
    c, h, w = (int(s) for s in in_shape)
    m, oh, ow = layer.output_shape((c, h, w))
    kh, kw = layer.kernel
    s, p = layer.stride, layer.padding
    k = layer.fan_in
    pixels = oh * ow
    load = c * h * w

    setup_iterations = max(
        h.bit_length(),
        s.bit_length(),
        p.bit_length(),
        (h + 2 * p - kh) // s,
        (w + 2 * p - kw) // s,
    )
    run_start = ConvEngine.SETUP_LATENCY + setup_iterations
    fold_cycles = max(k, rows + 1)
    pixel_blocks = -(-pixels // rows)
    filter_blocks = -(-m // cols)
    per_channel_reads = (oh // 2) * (ow // 2) if pool else pixels

    if last_word is None:
        last_word = began + load
    # The cycle the first fold is taken.
    take = max(began + run_start + rows, last_word + 1)
    # Block g of every run shares its half of the transpose buffer with block g - 2, which
    # may be the run before's.
    emitted = list(before.emitted[-2:]) if before else []
    first = len(emitted)
    drained = 0
    for b in range(filter_blocks):
        if len(emitted) >= 2:
            take = max(take, emitted[-2] + 1)
        last_take = take + (pixel_blocks - 1) * fold_cycles
        last_step = last_take + k
        drained = last_step + rows + cols + _drain_after_last_step()
        if b:
            begin = max(drained, emitted[-1] + 1)
        else:
            # A run's first block waits for the run before to be done.
            begin = max(drained, before.done + 1) if before else drained
            latched = begin
        lanes = min(cols, m - b * cols)
        emitted.append(begin + lanes * per_channel_reads)
        take = last_take + fold_cycles
    return ConvRun(
        began=began,
        last_word=last_word,
        emitted=tuple(emitted[first:]),
        computed=drained,
        latched=latched,
        done=emitted[-1] + _done_after_last_read(),
    )


def conv_cycles(
    layer: Conv2d,
    in_shape: Sequence[int],
    params: ArrayShape,
    pool: bool = False,
    input_delay: int = 0,
) -> ConvCycles:
    """Cycles of ``layer`` on a conv engine with ``params.rows x params.cols`` PEs.

    Parameters
    ----------
    layer
        The conv layer.
    in_shape
        Its input shape ``(C, H, W)``.
    params
        The engine's parameters (only ``rows`` and ``cols`` matter).
    pool
        The engine also applies the 2x2 max pool.
    input_delay
        Cycles after ``start`` before the first input word is offered (a buffer's read
        latency): it delays the load, which the set-up may hide. Negative when the input was
        loaded before the compute began (:func:`conv_stream_dones`).
    """
    rows, cols = int(params.rows), int(params.cols)
    c, h, w = (int(s) for s in in_shape)
    m, oh, ow = layer.output_shape((c, h, w))
    pixels = oh * ow
    load = c * h * w
    k = layer.fan_in
    cycles = conv_run(layer, in_shape, params, pool, last_word=load + input_delay).done
    macs = layer.macs((c, h, w))
    pes = rows * cols
    filter_blocks = -(-m // cols)
    pixel_blocks = -(-pixels // rows)
    return ConvCycles(
        cycles=cycles,
        macs=macs,
        utilization=macs / (cycles * pes),
        utilization_compute=macs / ((cycles - load) * pes),
        ideal_cycles=macs / pes,
        load_cycles=load,
        folds=filter_blocks * pixel_blocks,
        filter_blocks=filter_blocks,
        pixel_blocks=pixel_blocks,
        fold_cycles=max(k, rows + 1),
        steps=k,
    )


def conv_stream_dones(
    runs: Sequence[tuple[Conv2d, Sequence[int], bool]], params: ArrayShape
) -> list[int]:
    """The cycle of each run's ``done``, counted from the first ``start``, on an engine with two
    input banks (``input_banks=2``) started back to back: each ``start`` offered as soon as
    the engine takes one, inputs always valid, outputs always ready.

    ``runs`` are ``(layer, in_shape, pool)``. Run ``j`` is taken once run ``j - 1``'s input is
    in and that run computes (``A[j] = max(A[j-1] + load[j-1], F[j-1]) + 1``). It loads into
    the free bank and computes from ``F[j] = max(A[j], computed[j-1], latched[j-1] + 1)``: once
    run ``j - 1``'s last block is drained and the emitter has begun that run. Its blocks
    follow :func:`conv_cycles` from there, with the load shifted by ``A[j] - F[j]`` (so a load
    that ended during the previous run costs nothing), except that a block waits for the
    transpose buffer half it shares with the block two before it (which may be run
    ``j - 1``'s), and the run's first block is emitted only after run ``j - 1`` is done.
    """
    dones: list[int] = []
    taken = 0
    before: ConvRun | None = None
    for layer, in_shape, pool in runs:
        if before is not None:
            # Taken once the run before has its input and has left the queue.
            taken = max(before.last_word, before.began) + 1
        began = before.next_began(taken) if before is not None else taken
        load = prod(int(d) for d in in_shape)
        before = conv_run(
            layer, in_shape, params, pool, began=began, last_word=taken + load, before=before
        )
        dones.append(before.done)
    return dones
