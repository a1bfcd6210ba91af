"""The engine contract: what the whole-net compiler may ask of an engine, and nothing more.

An engine is one package in ``hw/`` (``hw/conv/``, ``hw/sparse_fc/``) that owns everything about
one hardware block: the Amaranth component, its driver (run-time config, memory images), its
cycle model, its sizing and its storage. The package exposes one :class:`EngineBinding`
subclass; ``codegen/engines.py`` lists those classes (one line each) and calls only the methods
below, so the compiler knows none of an engine's internals.

A binding *instance* is one flavour of the engine (the conv array with MAC or shift-add PEs, the
FC unit with one weight decoder): its fields are the hardware-size choices (array shape, PE
count), its :attr:`~EngineBinding.name` the instance name the build uses (``conv_pow2``).

``docs/engines.md`` describes the contract and how to add an engine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

import numpy as np
from amaranth.lib import wiring

from ..sim.target import Target

__all__ = ["EngineBinding", "EngineStep", "Images", "memory_depth"]

#: Memory images of an engine by memory name: one sequence of words, or one per PE.
Images = Mapping[str, Any]


class EngineStep(Protocol):
    """What an engine reads of one compiler step (a run of one layer on the engine)."""

    @property
    def layer(self) -> Any: ...

    @property
    def in_shape(self) -> tuple[int, ...]: ...

    @property
    def pool(self) -> bool: ...


def memory_depth(words: int) -> int:
    """Depth of a memory that must hold ``words`` words."""
    # A memory of one word would have a zero-width address; the engines take two at least.
    return max(2, int(words))


class EngineBinding(ABC):
    """One engine as the compiler sees it. Subclasses set the class attributes and implement
    every method; the compiler calls nothing else.

    Attributes
    ----------
    FAMILY
        The engine's name (``"conv"``, ``"sparse_fc"``).
    LAYER_KINDS
        IR layer kinds (:attr:`squeezeforge.sim.ir.Conv2d.kind` ...) the engine runs.
    WEIGHT_KINDS
        Weight format kinds it runs; a layer of its kinds with another format is refused with
        :meth:`unsupported`'s reason.
    WHY_NOT
        The reason given for a weight format outside :attr:`WEIGHT_KINDS`.
    CHAINS
        Whether the engine can take a run's input while it computes the run before (two input
        banks): the compiler then feeds a step the previous step's outputs as they leave
        (a ``chained`` step; :func:`squeezeforge.codegen.plan.chain_steps`), and
        :meth:`size` gives the engine its second bank.
    """

    FAMILY: ClassVar[str]
    LAYER_KINDS: ClassVar[tuple[str, ...]]
    WEIGHT_KINDS: ClassVar[tuple[str, ...]]
    WHY_NOT: ClassVar[str]
    CHAINS: ClassVar[bool] = False

    # What a layer may be: pure rules on kinds, so a recipe is checked before any training.

    @classmethod
    def runs(cls, layer_kind: str) -> bool:
        """Whether layers of ``layer_kind`` belong to this engine at all."""
        return layer_kind in cls.LAYER_KINDS

    @classmethod
    def unsupported(cls, layer_kind: str, weight_kind: str) -> str | None:
        """Why this engine cannot run a ``layer_kind`` layer with ``weight_kind`` weights, or
        None when it can (or when the layer kind is not the engine's)."""
        if cls.runs(layer_kind) and weight_kind not in cls.WEIGHT_KINDS:
            return cls.WHY_NOT
        return None

    @classmethod
    def for_layer(cls, layer: Any, target: Target | None = None) -> EngineBinding:
        """The flavour of the engine that runs ``layer`` (checked with :meth:`unsupported`),
        sized by ``target`` (the default Target when None; see :meth:`target_sizes`).

        Flavours differ by weight decoder: an engine whose flavours differ otherwise overrides
        this.
        """
        sizes = cls.target_sizes(target or Target())
        return cls(weight_kind=layer.weight_format.kind, **sizes)  # type: ignore[call-arg]

    @classmethod
    @abstractmethod
    def target_sizes(cls, target: Target) -> dict[str, int]:
        """The instance fields this engine takes from the Target (array shape, PEs, ...)."""

    @property
    @abstractmethod
    def name(self) -> str:
        """Instance name in the build (module and memory file names)."""

    # One set of layers on one instance.

    @abstractmethod
    def size(self, steps: Sequence[EngineStep], act_bits: int) -> Any:
        """Elaboration parameters (widths, depths) of an instance that runs all ``steps``."""

    @abstractmethod
    def fits(self, step: EngineStep, params: Any) -> str | None:
        """Why ``step`` alone does not fit an instance built with ``params``, or None."""

    @abstractmethod
    def place(
        self, steps: Sequence[EngineStep], params: Any
    ) -> tuple[list[dict[str, int]], Images]:
        """The steps one after another in the instance's memories: the run-time ``cfg`` field
        values of each step and the memories' images."""

    @abstractmethod
    def cycles(
        self, step: EngineStep, params: Any, x: np.ndarray, input_delay: int = 0
    ) -> tuple[float, float]:
        """Modelled cycles from ``start`` to ``done`` and the ideal bound, averaged over the
        step inputs ``x`` (one row per image), from the engine's cycle model. The first input
        word arrives ``input_delay`` cycles after ``start`` (a buffer's read latency); an engine
        whose set-up outlasts its input load hides that delay."""

    def chain_run(
        self, step: EngineStep, params: Any, *, began: int, last_word: int, before: Any
    ) -> Any:
        """For an engine that :attr:`CHAINS`: the run of ``step`` on a time line shared with
        the run ``before`` it on the instance (None: the instance was idle), its compute begun
        at cycle ``began`` and its last input word at ``last_word``. The result has
        ``began``, ``last_word``, ``done`` and ``next_began(taken)``: the cycle a run taken at
        ``taken`` begins after it."""
        raise NotImplementedError(f"the {self.FAMILY} engine does not chain runs")

    @abstractmethod
    def storage_bytes(self, params: Any) -> int:
        """Bytes of the on-chip memories the instance's weights, biases and tables live in."""

    @abstractmethod
    def build(self, params: Any, images: Images | None = None) -> wiring.Component:
        """The Amaranth component, its memories initialised with ``images`` when given."""

    @abstractmethod
    def params_dict(self, params: Any) -> dict[str, Any]:
        """The parameters as plain JSON values, without memory contents."""
