"""What a layer occupies in the generated memories on a given Target: the one definition.

The compression report (models/) and the compiler's engines both call :func:`layer_storage`,
so the bytes a report gives are the bytes of the memories the hardware is built with. A layer
alone in its engine takes exactly these bits; several layers sharing an engine are stacked one
after the other, each with its own words (the engine's words are as wide as its widest layer
needs, which this per-layer account does not add).

Fully connected layers (``dense`` and ``sparse_dense``) run on the sparse FC unit:

* weights: the CSC entries' weight codes (``stored_bits`` each). Every PE holds a bank as deep as
  the busiest PE's entries (padding entries included), so a layer takes ``fc_pes`` x that;
* index: one ``index_bits``-wide relative row index per entry word, plus ``in + 1`` column
  pointers per PE, each as wide as an address into that PE's entries;
* codebook: the table, one copy per PE (``2**index_bits`` values of ``value_bits``);
* bias: ``ceil(out / fc_pes)`` words per PE of ``bias_bits``.

Conv layers run on the conv engine: a weight word holds one weight for each of the
``conv_cols`` filters of a block (lanes past the last filter are stored as zeros), one word per
block and GEMM step; a bias word holds a block's biases, each pre-aligned to the accumulator.

This module is at the bottom of the package: it reads only the IR, the numeric contract and the
Target.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .ir import Conv2d, CscMatrix, Dense, SparseDense
from .numerics import CodebookWeights, Pow2Weights
from .target import Target

__all__ = ["LayerStorage", "fc_layout", "layer_storage", "layer_storage_bytes", "net_act_bits"]


@dataclass(frozen=True)
class LayerStorage:
    """Bits one layer occupies in its engine's memories, by part (see the module docstring)."""

    engine: str  # "conv" or "fc"
    weights: int
    index: int
    codebook: int
    bias: int
    entries: int = 0  # CSC entries, padding included (fc only)
    entry_words: int = 0  # entry-memory words over all PEs (fc_pes x busiest PE's entries)

    @property
    def total(self) -> int:
        return self.weights + self.index + self.codebook + self.bias

    def bytes(self) -> dict[str, int]:
        """Each part rounded up to whole bytes, and their sum."""
        parts = {
            "weights": _bytes(self.weights),
            "index": _bytes(self.index),
            "codebook": _bytes(self.codebook),
            "bias": _bytes(self.bias),
        }
        return {**parts, "total": sum(parts.values())}


def _bytes(bits: int) -> int:
    return math.ceil(bits / 8)


def net_act_bits(layers: Iterable[Any], target: Target) -> int:
    """The datapath's activation width: the Target's, or the widest format of the layers."""
    widest = max(
        max(lay.input_format.bits, lay.output_format.bits)
        for lay in layers
        if isinstance(lay, Conv2d | Dense | SparseDense)
    )
    return target.act_bits if target.act_bits is not None else widest


def fc_layout(layer: Dense | SparseDense, target: Target) -> CscMatrix:
    """The layer's matrix in CSC form over the Target's FC PEs and index width.

    Dense layers run on the sparse unit at full density, so they get the same layout.
    """
    return CscMatrix.encode(layer.weight, target.fc_pes, target.index_bits, name=layer.name)


def _fc_storage(layer: Dense | SparseDense, target: Target) -> LayerStorage:
    wf = layer.weight_format
    n = target.fc_pes
    csc = fc_layout(layer, target)
    busiest = int(csc.pe_entries.max()) if csc.pe_entries.size else 0
    words = n * busiest
    # A pointer addresses its PE's entry memory, which is as deep as the busiest PE needs.
    pointer_bits = max(1, busiest.bit_length())
    codebook = n * len(wf.table) * wf.value_bits if isinstance(wf, CodebookWeights) else 0
    return LayerStorage(
        engine="fc",
        weights=words * wf.stored_bits,
        index=words * target.index_bits + n * (layer.in_features + 1) * pointer_bits,
        codebook=codebook,
        bias=n * -(-layer.out_features // n) * layer.bias_bits,
        entries=csc.entries,
        entry_words=words,
    )


def _conv_storage(layer: Conv2d, target: Target, act_bits: int) -> LayerStorage:
    wf = layer.weight_format
    cols = target.conv_cols
    blocks = -(-layer.out_channels // cols)
    if isinstance(wf, Pow2Weights):
        # The shift-add PE's widest product: an activation shifted by the largest exponent the
        # engine's codes reach, plus the sign.
        product = act_bits + (1 << (wf.bits - 2))
    else:
        product = act_bits + wf.stored_bits
    acc_bits = max(product, layer.acc_bits)
    return LayerStorage(
        engine="conv",
        weights=blocks * layer.fan_in * cols * wf.stored_bits,
        index=0,
        codebook=0,
        bias=blocks * cols * acc_bits,
    )


def layer_storage(layer: Any, target: Target, act_bits: int | None = None) -> LayerStorage:
    """Bits ``layer`` occupies in the memories of the engine it runs on for ``target``.

    ``act_bits`` is the datapath's activation width (conv biases are stored at the
    accumulator's width, which depends on it); the layer's own widest format when None.
    """
    if isinstance(layer, Dense | SparseDense):
        return _fc_storage(layer, target)
    if isinstance(layer, Conv2d):
        if act_bits is None:
            act_bits = net_act_bits([layer], target)
        return _conv_storage(layer, target, act_bits)
    raise TypeError(f"layer {layer.name!r} ({layer.kind}) stores nothing")


def layer_storage_bytes(layer: Any, target: Target, act_bits: int | None = None) -> dict[str, int]:
    """:func:`layer_storage` in bytes: weights, index, codebook, bias (each rounded up), total."""
    return layer_storage(layer, target, act_bits).bytes()
