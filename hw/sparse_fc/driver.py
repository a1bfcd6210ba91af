"""Map an IR layer to the sparse FC unit: ``cfg`` values and memory images at base addresses.

Pure Python, used by the cocotb benches (images written through the ``load`` port) and by the
whole-net flow (images merged into :class:`~squeezeforge.hw.sparse_fc.engine.SparseFCInit`, the
memories' initial contents, several layers at different bases).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ...sim.ir import CscMatrix, Dense, SparseDense, busiest_pe_entries
from ...sim.numerics import CodebookWeights, FixedWeights, Pow2Weights, pow2_encode
from ..interface import SHIFT_BITS
from .cycles import as_csc
from .engine import SparseFCInit, SparseFCMemory, SparseFCParams

__all__ = [
    "MemoryImage",
    "SparseFCPlacement",
    "load_writes",
    "place_layers",
    "sparse_fc_config",
    "sparse_fc_init",
    "sparse_fc_layer",
    "sparse_fc_memory_images",
]


@dataclass(frozen=True)
class SparseFCPlacement:
    """Where a layer lives in the unit's memories (the same bases in every PE)."""

    ptr_base: int = 0
    entry_base: int = 0
    bias_base: int = 0
    codebook_base: int = 0


@dataclass(frozen=True, eq=False)
class MemoryImage:
    """A layer's words in one memory.

    Attributes
    ----------
    memory
        Which memory.
    base
        Address of the first word (the same in every PE).
    words
        One array of values per PE, or a single array for the codebook (every PE holds a copy).
        Values are signed where the memory is (bias, codebook).
    """

    memory: SparseFCMemory
    base: int
    words: tuple[np.ndarray, ...]


def _weight_codes(enc: CscMatrix, params: SparseFCParams) -> np.ndarray:
    """Hardware weight codes of the entries' stored values."""
    v = enc.v.astype(np.int64)
    wb = params.weight_bits
    if params.weight_kind == "codebook":
        return v
    if params.weight_kind == "pow2":
        return pow2_encode(v, wb)
    return v & ((1 << wb) - 1)


def _check_weights(layer: Dense | SparseDense, params: SparseFCParams) -> None:
    wf = layer.weight_format
    kind = params.weight_kind
    if wf.kind != kind:
        raise ValueError(
            f"layer {layer.name!r} has {wf.kind} weights; this unit decodes {kind} weights"
        )
    if isinstance(wf, CodebookWeights):
        if wf.index_bits > params.weight_bits:
            raise ValueError(
                f"layer {layer.name!r}: codebook index of {wf.index_bits} bits, the unit"
                f" stores {params.weight_bits}"
            )
        if wf.value_bits > params.codebook_value_bits:
            raise ValueError(
                f"layer {layer.name!r}: codebook values of {wf.value_bits} bits, the unit holds"
                f" {params.codebook_value_bits}"
            )
    elif isinstance(wf, Pow2Weights):
        if wf.max_shift > params.pow2_max_shift:
            raise ValueError(
                f"layer {layer.name!r}: power-of-two weights of {wf.bits} bits, the unit"
                f" decodes {params.weight_bits}"
            )
    elif isinstance(wf, FixedWeights) and wf.bits > params.weight_bits:
        raise ValueError(
            f"layer {layer.name!r}: fixed-point weights of {wf.bits} bits, the unit"
            f" multiplies {params.weight_bits}"
        )


def sparse_fc_layer(
    layer: Dense | SparseDense,
    params: SparseFCParams,
    placement: SparseFCPlacement | None = None,
) -> CscMatrix:
    """The layer's matrix in the unit's CSC layout, after checking that the layer fits.

    Raises
    ------
    ValueError
        Naming the layer and what does not fit (formats, widths, sizes, memory depths).
    TypeError
        For a layer kind the unit does not run.
    """
    if not isinstance(layer, Dense | SparseDense):
        raise TypeError(f"the sparse FC unit runs dense and sparse_dense layers, not {layer!r}")
    at = placement or SparseFCPlacement()
    name = layer.name
    p = params
    _check_weights(layer, p)
    for what, fmt in (("input", layer.input_format), ("output", layer.output_format)):
        if fmt.bits > p.act_bits:
            raise ValueError(
                f"layer {name!r}: {what} activations of {fmt.bits} bits, the unit has {p.act_bits}"
            )
    if layer.acc_bits > p.acc_bits:
        raise ValueError(
            f"layer {name!r} needs a {layer.acc_bits}-bit accumulator, the unit has {p.acc_bits}"
        )
    if layer.bias_bits > p.bias_bits:
        raise ValueError(
            f"layer {name!r} has {layer.bias_bits}-bit biases, the unit stores {p.bias_bits}"
        )
    if not 0 <= layer.shift < 1 << SHIFT_BITS:
        raise ValueError(f"layer {name!r}: requantization shift {layer.shift} out of range")
    rows = -(-layer.out_features // p.n_pe)
    if rows > p.acc_depth:
        raise ValueError(
            f"layer {name!r}: {layer.out_features} outputs need {rows} accumulators per PE,"
            f" the unit has {p.acc_depth} ({p.max_out_features} outputs on {p.n_pe} PEs)"
        )
    if at.ptr_base + layer.in_features + 1 > p.ptr_depth:
        raise ValueError(
            f"layer {name!r}: {layer.in_features} inputs need {layer.in_features + 1} pointers"
            f" from address {at.ptr_base}, the pointer memory has {p.ptr_depth} words"
        )
    if at.bias_base + rows > p.bias_memory_depth:
        raise ValueError(
            f"layer {name!r}: {rows} biases per PE from address {at.bias_base} exceed the bias"
            f" memory of {p.bias_memory_depth} words"
        )
    if p.weight_kind == "codebook":
        table = len(layer.weight_format.table)
        if at.codebook_base + table > p.codebook_memory_depth:
            raise ValueError(
                f"layer {name!r}: a {table}-entry codebook from address {at.codebook_base}"
                f" exceeds the codebook memory of {p.codebook_memory_depth} words"
            )
    encoded = as_csc(layer, p.n_pe, p.index_bits)
    worst = busiest_pe_entries(layer, p.n_pe, p.index_bits)
    if at.entry_base + worst > p.entry_depth:
        raise ValueError(
            f"layer {name!r}: a PE holds {worst} entries from address {at.entry_base}, the"
            f" entry memory has {p.entry_depth} words per PE"
        )
    return encoded


def sparse_fc_config(
    layer: Dense | SparseDense,
    params: SparseFCParams,
    placement: SparseFCPlacement | None = None,
) -> dict[str, int]:
    """Field values of the ``cfg`` port for one layer (raises ValueError if it does not fit)."""
    sparse_fc_layer(layer, params, placement)
    at = placement or SparseFCPlacement()
    return {
        "in_features": layer.in_features,
        "out_features": layer.out_features,
        "ptr_base": at.ptr_base,
        "entry_base": at.entry_base,
        "bias_base": at.bias_base,
        "codebook_base": at.codebook_base,
        "shift": layer.shift,
        "out_bits": layer.output_format.bits,
        "relu": int(layer.relu),
        "clamp": int(layer.clamp_max is not None),
        "clamp_max": int(layer.clamp_max or 0),
    }


def sparse_fc_memory_images(
    layer: Dense | SparseDense,
    params: SparseFCParams,
    placement: SparseFCPlacement | None = None,
) -> dict[str, MemoryImage]:
    """The layer's words in the pointer, entry, bias (and codebook) memories.

    Pointers are stored relative to the layer's entry base; the unit adds ``cfg.entry_base``.
    An entry is ``code | z << weight_bits``, the code being the codebook index, the
    :func:`~squeezeforge.sim.numerics.pow2_encode` code at the unit's width, or the two's
    complement fixed-point value.
    """
    enc = sparse_fc_layer(layer, params, placement)
    at = placement or SparseFCPlacement()
    n = params.n_pe
    codes = _weight_codes(enc, params)
    packed = codes | (enc.z.astype(np.int64) << params.weight_bits)
    ptr = enc.ptr.astype(np.int64)
    images = {
        "ptr": MemoryImage(
            SparseFCMemory.PTR, at.ptr_base, tuple(ptr[k] - ptr[k, 0] for k in range(n))
        ),
        "entry": MemoryImage(
            SparseFCMemory.ENTRY,
            at.entry_base,
            tuple(packed[ptr[k, 0] : ptr[k, -1]] for k in range(n)),
        ),
        "bias": MemoryImage(
            SparseFCMemory.BIAS,
            at.bias_base,
            tuple(np.asarray(layer.bias, dtype=np.int64)[k::n] for k in range(n)),
        ),
    }
    if params.weight_kind == "codebook":
        table = np.asarray(layer.weight_format.table, dtype=np.int64)
        images["codebook"] = MemoryImage(SparseFCMemory.CODEBOOK, at.codebook_base, (table,))
    return images


def load_writes(images: dict[str, MemoryImage], params: SparseFCParams) -> np.ndarray:
    """Writes for the ``load`` port: rows ``(memory, pe, addr, data)``, data as unsigned bits."""
    mask = (1 << params.load_data_bits) - 1
    rows = []
    for image in images.values():
        for pe, words in enumerate(image.words):
            addr = image.base + np.arange(len(words), dtype=np.int64)
            block = np.empty((len(words), 4), dtype=np.int64)
            block[:, 0] = image.memory.value
            block[:, 1] = pe
            block[:, 2] = addr
            block[:, 3] = np.asarray(words, dtype=np.int64) & mask
            rows.append(block)
    return np.concatenate(rows) if rows else np.zeros((0, 4), dtype=np.int64)


def sparse_fc_init(
    params: SparseFCParams, layer_images: Iterable[dict[str, MemoryImage]]
) -> SparseFCInit:
    """Merge the images of several layers into the memories' initial contents.

    Raises
    ------
    ValueError
        When two layers write different values to the same word.
    """
    init = SparseFCInit.zeros(params)
    written = {
        name: np.zeros(np.shape(getattr(init, name)), dtype=bool)
        for name in ("ptr", "entry", "bias", "codebook")
    }
    for images in layer_images:
        for name, image in images.items():
            target = getattr(init, name)
            used = written[name]
            for pe, words in enumerate(image.words):
                sl = slice(image.base, image.base + len(words))
                dst = target[sl] if name == "codebook" else target[pe, sl]
                seen = used[sl] if name == "codebook" else used[pe, sl]
                clash = seen & (dst != words)
                if np.any(clash):
                    addr = image.base + int(np.flatnonzero(clash)[0])
                    raise ValueError(f"two layers write different values to {name} word {addr}")
                dst[...] = words
                seen[...] = True
    return init


def place_layers(
    layers: Sequence[Dense | SparseDense], params: SparseFCParams
) -> list[SparseFCPlacement]:
    """Bases that put the layers one after the other in every memory.

    Raises
    ------
    ValueError
        When the layers do not fit together (the message names the first that does not).
    """
    placements = []
    ptr = entry = bias = codebook = 0
    for layer in layers:
        at = SparseFCPlacement(ptr, entry, bias, codebook)
        sparse_fc_layer(layer, params, at)  # checks that the layer fits there
        placements.append(at)
        ptr += layer.in_features + 1
        entry += busiest_pe_entries(layer, params.n_pe, params.index_bits)
        bias += -(-layer.out_features // params.n_pe)
        if params.weight_kind == "codebook":
            codebook += len(layer.weight_format.table)
    return placements
