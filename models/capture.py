"""Capture a user's model, whatever its ``forward`` looks like, as layers the IR expresses.

The compression passes and the export read a model as a :class:`torch.nn.Sequential` of leaf
modules in execution order, or, when a layer reads another tensor than the previous layer's
output (a residual add, a concat of branches), as a
:class:`~squeezeforge.models.graph.LayerGraph`: the same stack, whose ``inputs`` name what such
layers read. A user's model rarely is either: it has a custom ``forward`` with functional calls
(``F.relu``, ``F.max_pool2d``, ``torch.flatten``, ``x.view(x.size(0), -1)``, ``x + y``,
``torch.cat``), nested modules and unnamed ``nn.Sequential`` children. :func:`capture` traces it
with :mod:`torch.fx`, follows the tensors from input to output, turns each functional call into
the equivalent module (an add into :class:`~squeezeforge.models.graph.ResidualAdd`, a concat
into :class:`~squeezeforge.models.graph.ChannelConcat`, ``F.relu6`` and ``clamp(x, 0, c)`` into
``nn.ReLU6`` and ``nn.Hardtanh(0, c)``), and returns the layers in the tracer's (topological)
order. A model that is a chain comes back as a plain stack, exactly as before graphs existed.
The layers share the user's parameter tensors (nothing is copied) and are checked to compute
the same outputs as the model on a random input.

A node the IR cannot express (a product, a second input, an unknown function, a concat along
another axis than the channels, an add that broadcasts) is refused with one line naming the
operation and where it is in ``forward``, before any training.
"""

from __future__ import annotations

import copy
import math
import operator
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from squeezeforge.sim.errors import UserError
from squeezeforge.sim.ir import NET_INPUT

from .graph import ChannelConcat, LayerGraph, ResidualAdd

if TYPE_CHECKING:
    from .data import Dataset

__all__ = ["capture", "check_input_shape", "check_targets", "is_stack"]

_RELU_FUNCTIONS = {F.relu, torch.relu, torch.relu_}
_DROPOUT_FUNCTIONS = {F.dropout, torch.dropout}
_FLATTEN_FUNCTIONS = {torch.flatten, torch.reshape}
_FLATTEN_METHODS = {"view", "reshape", "flatten"}
_SOFTMAX = {F.softmax, F.log_softmax, torch.softmax, torch.log_softmax}
_SOFTMAX_MODULES = (nn.Softmax, nn.LogSoftmax)
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_", "__add__", "__iadd__"}
_CAT_FUNCTIONS = {torch.cat, torch.concat, torch.concatenate}
_CLAMP_FUNCTIONS = {torch.clamp, torch.clip, torch.clamp_, torch.clip_}
_CLAMP_METHODS = {"clamp", "clip", "clamp_", "clip_"}


def is_stack(model: nn.Module) -> bool:
    """True when ``model`` is an ``nn.Sequential`` whose containers are all ``nn.Sequential``:
    its module order is its execution order, so it needs no tracing."""
    if not isinstance(model, nn.Sequential):
        return False
    if any(isinstance(m, _SOFTMAX_MODULES) for m in model.modules()):
        return False  # traced, so that a trailing softmax is dropped with a note
    if any(isinstance(m, nn.AdaptiveAvgPool2d) for m in model.modules()):
        return False  # traced: its window follows from the input size
    return all(
        isinstance(m, nn.Sequential) or not any(True for _ in m.children()) for m in model.modules()
    )


class _Tracer(fx.Tracer):
    """torch.fx's tracer, which keeps squeezeforge's add and concat modules as one call each
    (named by their module path) instead of tracing into their ``forward``."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, ResidualAdd | ChannelConcat) or super().is_leaf_module(
            m, module_qualified_name
        )


def _where(node: fx.Node) -> str:
    """``forward`` line of ``node`` as the tracer recorded it: the user's frame comes first."""
    trace = node.meta.get("stack_trace") or ""
    for line in trace.splitlines():
        line = line.strip()
        if line.startswith("File ") and "/torch/" not in line:
            # 'File "net.py", line 12, in forward' -> 'net.py:12 in forward'
            parts = line.split(", ")
            if len(parts) >= 3:
                path = parts[0][len("File ") :].strip('"').rsplit("/", 1)[-1]
                return f"{path}:{parts[1].removeprefix('line ')} in {parts[2].removeprefix('in ')}"
    return "forward"


def _describe(node: fx.Node) -> str:
    if node.op == "call_module":
        return f"module {node.target!r}"
    if node.op == "call_method":
        return f"tensor method .{node.target}()"
    if node.op == "call_function":
        name = getattr(node.target, "__name__", str(node.target))
        module = getattr(node.target, "__module__", "") or ""
        return f"function {module + '.' if module else ''}{name}()"
    return f"{node.op} {node.target!r}"


def _refuse(node: fx.Node, why: str) -> UserError:
    return UserError(f"{_describe(node)} at {_where(node)}: {why}")


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _tensor_inputs(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    for arg in node.all_input_nodes:
        if _shape(arg) is not None and arg not in found:
            found.append(arg)
    return found


def _arg(node: fx.Node, index: int, name: str, default: object) -> object:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _adaptive_pool(node: fx.Node, in_shape: tuple[int, ...], size: object) -> nn.AvgPool2d:
    """An adaptive average pool as the fixed window it is on this input: the output size must
    divide the input size (1 is global average pooling)."""
    h, w = in_shape[-2:]
    oh, ow = (size, size) if isinstance(size, int) else tuple(size)  # type: ignore[misc]
    oh, ow = oh or h, ow or w
    if h % oh or w % ow or (h // oh != w // ow and (oh, ow) != (1, 1)):
        raise _refuse(
            node,
            f"adaptive average pooling of {h}x{w} to {oh}x{ow} has uneven windows; supported:"
            " output sizes that divide the input evenly with a square stride (1 is global)",
        )
    kernel = (h // oh, w // ow)
    return nn.AvgPool2d(kernel, stride=max(kernel))


def _as_module(node: fx.Node, modules: dict[str, nn.Module]) -> nn.Module | None:
    """The module ``node`` computes, or None for a node that changes nothing (dropout, an
    identity reshape)."""
    target = node.target
    in_shape = _shape(_tensor_inputs(node)[0])
    out_shape = _shape(node)
    if node.op == "call_module":
        module = modules[str(target)]
        if isinstance(module, nn.AdaptiveAvgPool2d):
            assert in_shape is not None
            return _adaptive_pool(node, in_shape, module.output_size)
        if isinstance(module, nn.Hardtanh) and not isinstance(module, nn.ReLU6):
            _clamp(node, module.min_val, module.max_val)  # refuses another range
        return module
    if target in _RELU_FUNCTIONS or (node.op == "call_method" and target in ("relu", "relu_")):
        return nn.ReLU()
    if target in _DROPOUT_FUNCTIONS or target is F.dropout2d:
        return None
    if target is F.max_pool2d:
        kernel = _arg(node, 1, "kernel_size", None)
        stride = _arg(node, 2, "stride", None)
        padding = _arg(node, 3, "padding", 0)
        return nn.MaxPool2d(kernel, stride=stride or kernel, padding=padding)  # type: ignore[arg-type]
    if target is F.avg_pool2d:
        kernel = _arg(node, 1, "kernel_size", None)
        stride = _arg(node, 2, "stride", None)
        padding = _arg(node, 3, "padding", 0)
        return nn.AvgPool2d(kernel, stride=stride or kernel, padding=padding)  # type: ignore[arg-type]
    if target is F.adaptive_avg_pool2d:
        assert in_shape is not None
        return _adaptive_pool(node, in_shape, _arg(node, 1, "output_size", None))
    if target is torch.mean or (node.op == "call_method" and target == "mean"):
        assert in_shape is not None and out_shape is not None
        dims = _arg(node, 1, "dim", None)
        dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
        if len(in_shape) == 4 and sorted(d % 4 for d in dims) == [2, 3]:
            gap = nn.AvgPool2d(in_shape[2:], stride=max(in_shape[2:]))
            # mean over H and W without keepdim is the pool and a flatten.
            return gap if len(out_shape) == 4 else nn.Sequential(gap, nn.Flatten())
        raise _refuse(node, "averages over other axes than H and W (global average pooling)")
    if target in _FLATTEN_FUNCTIONS or (node.op == "call_method" and target in _FLATTEN_METHODS):
        if out_shape == in_shape:
            return None
        assert in_shape is not None and out_shape is not None
        if out_shape == (in_shape[0], math.prod(in_shape[1:])):
            return nn.Flatten()
        raise _refuse(
            node,
            f"reshapes {list(in_shape[1:])} to {list(out_shape[1:])}; only flattening to one"
            " vector per sample is supported",
        )
    if target is F.relu6:
        return nn.ReLU6()
    if target is F.hardtanh:
        return _clamp(node, _arg(node, 1, "min_val", -1.0), _arg(node, 2, "max_val", 1.0))
    if target in _CLAMP_FUNCTIONS or (node.op == "call_method" and target in _CLAMP_METHODS):
        return _clamp(node, _arg(node, 1, "min", None), _arg(node, 2, "max", None))
    if target is F.hardsigmoid:
        return nn.Hardsigmoid()
    raise _refuse(
        node,
        "has no equivalent in the IR (supported: Conv2d, Linear, ReLU, ReLU6 and clamps to"
        " [0, c], Hardsigmoid, max and average pool, mean over H and W, flatten/view, residual"
        " adds, concats along the channels, BatchNorm, Dropout)",
    )


def _clamp(node: fx.Node, lo: object, hi: object) -> nn.Module:
    """A clamp to ``[lo, hi]`` as the module the IR takes: a ReLU (``hi`` None) or a ReLU with
    a ceiling, ``nn.Hardtanh(0, hi)`` (ReLU6 when ``hi`` is 6)."""
    numbers = all(v is None or isinstance(v, int | float) for v in (lo, hi))
    if not numbers or lo is None or float(lo) != 0.0 or (hi is not None and not float(hi) > 0):
        shown = ", ".join("a tensor" if isinstance(v, fx.Node) else str(v) for v in (lo, hi))
        raise _refuse(
            node,
            f"clamps to [{shown}]; supported: a clamp to [0, c] with c > 0 (ReLU6) or to [0,"
            " None] (ReLU)",
        )
    return nn.ReLU() if hi is None else nn.Hardtanh(0.0, float(hi))


def _join(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[nn.Module, list[fx.Node]] | None:
    """The add or concat ``node`` is, with the nodes it reads in order; None for another op."""
    target = node.target
    module = modules.get(str(target)) if node.op == "call_module" else None
    if isinstance(module, ChannelConcat):
        return module, [a for a in node.args if isinstance(a, fx.Node)]
    is_add = (
        (node.op == "call_function" and target in _ADD_FUNCTIONS)
        or (node.op == "call_method" and target in _ADD_METHODS)
        or isinstance(module, ResidualAdd)
    )
    if is_add:
        a, b = _arg(node, 0, "input", None), _arg(node, 1, "other", None)
        if _arg(node, 2, "alpha", 1) != 1:
            raise _refuse(node, "scales the second addend (alpha); the IR adds two tensors")
        if not all(isinstance(t, fx.Node) and _shape(t) is not None for t in (a, b)):
            raise _refuse(
                node,
                "adds a constant to a tensor; the IR adds two tensors (fold a constant into the"
                " bias of the layer before)",
            )
        assert isinstance(a, fx.Node) and isinstance(b, fx.Node)
        if _shape(a) != _shape(b):
            raise _refuse(
                node,
                f"adds tensors of shapes {list(_shape(a) or ())[1:]} and"
                f" {list(_shape(b) or ())[1:]}; the IR adds tensors of one shape (no"
                " broadcasting)",
            )
        return (module if isinstance(module, ResidualAdd) else ResidualAdd()), [a, b]
    if node.op == "call_function" and target in _CAT_FUNCTIONS:
        parts = _arg(node, 0, "tensors", None)
        dim = node.kwargs.get("axis", _arg(node, 1, "dim", 0))
        if not isinstance(parts, list | tuple) or not all(
            isinstance(t, fx.Node) and _shape(t) is not None for t in parts
        ):
            raise _refuse(node, "concatenates something other than a list of tensors")
        rank = len(_shape(parts[0]) or ())
        if not isinstance(dim, int) or dim % rank != 1:
            raise _refuse(
                node,
                f"concatenates {rank}-D tensors along dim {dim}; the IR joins along the channels"
                " (dim 1, or -3 of (N, C, H, W); the features of (N, F)) only",
            )
        return ChannelConcat(), list(parts)
    return None


def capture(
    model: nn.Module, input_shape: Sequence[int], *, notes: list[str] | None = None
) -> nn.Sequential:
    """The layers of ``model`` as an ``nn.Sequential`` in execution order.

    ``input_shape`` is one sample's shape (C, H, W or features). Child names are the module
    paths with ``.`` replaced by ``_`` (``features.0`` -> ``features_0``); a functional call
    gets the tracer's node name (``relu``, ``max_pool2d_1``). A trailing softmax is dropped (the
    class with the highest score is unchanged) and said in ``notes``.
    """
    if is_stack(model):
        return model
    tracer = _Tracer()
    tracer.record_stack_traces = True
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means the same to the user
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            f"cannot trace {type(model).__name__}.forward with torch.fx ({first}); data-dependent"
            " control flow in forward cannot be captured"
        ) from None
    gm = fx.GraphModule(tracer.root, graph)
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise UserError(
            f"{type(model).__name__}.forward takes {len(inputs)} inputs; squeezeforge maps"
            " models with one input tensor"
        )
    was_training = model.training
    model.eval()
    example = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
    try:
        ShapeProp(gm).propagate(example)
        with torch.no_grad():
            expected = model(example)
    except Exception as exc:  # noqa: BLE001
        raise UserError(
            f"{type(model).__name__} does not run on inputs of shape {list(input_shape)}:"
            f" {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    finally:
        model.train(was_training)

    modules = dict(gm.named_modules())
    output = next(n for n in graph.nodes if n.op == "output")
    live = _live(output)
    nodes = [n for n in graph.nodes if n.op not in ("placeholder", "output") and n in live]
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    reads: dict[str, tuple[str, ...]] = {}
    # The layer whose output each node's value is (NET_INPUT for the input).
    tensor_of: dict[fx.Node, str] = {inputs[0]: NET_INPUT}
    previous = NET_INPUT
    used: set[int] = set()

    def add_layer(name: str, module: nn.Module, srcs: tuple[str, ...]) -> str:
        nonlocal previous
        if id(module) in used:
            # One module called twice: a ReLU or a pool is copied, weights are not shared.
            if any(True for _ in module.parameters()):
                raise _refuse(
                    node,
                    "calls a module with weights a second time; each layer of"
                    " the IR has its own weights",
                )
            module = copy.deepcopy(module)
        used.add(id(module))
        base, k = name, 0
        while name in layers or name == NET_INPUT:
            k += 1
            name = f"{base}_{k}"
        if srcs != (previous,):
            reads[name] = srcs
        layers[name] = module
        previous = name
        return name

    for i, node in enumerate(nodes):
        if _shape(node) is None:
            # Sizes and other non-tensor values (x.size(0)) only feed a view's arguments.
            continue
        if node.op == "get_attr":
            raise _refuse(node, "reads a tensor attribute directly; use a module instead")
        tensors = _tensor_inputs(node)
        is_last = all(_shape(n) is None for n in nodes[i + 1 :])
        softmax_module = node.op == "call_module" and isinstance(
            modules[str(node.target)], _SOFTMAX_MODULES
        )
        if (
            softmax_module
            or node.target in _SOFTMAX
            or (node.op == "call_method" and node.target == "softmax")
        ):
            if not is_last:
                raise _refuse(node, "softmax is supported only as the last operation")
            if notes is not None:
                what = _describe(node)
                if softmax_module:
                    what += f" ({type(modules[str(node.target)]).__name__})"
                notes.append(f"{what} at {_where(node)} dropped: argmax is unchanged")
            tensor_of[node] = tensor_of[tensors[0]]
            expected = None  # the layers end before the softmax: compare the scores instead
            continue
        joined = _join(node, modules)
        if joined is not None:
            module, srcs = joined
        elif len(tensors) != 1:
            raise _refuse(
                node,
                f"combines {len(tensors)} tensors; the IR combines tensors only by an add or a"
                " concat along the channels",
            )
        else:
            module, srcs = _as_module(node, modules), tensors
        if module is None:
            tensor_of[node] = tensor_of[srcs[0]]
            continue
        name = str(node.target).replace(".", "_") if node.op == "call_module" else node.name
        src_names = tuple(tensor_of[s] for s in srcs)
        if isinstance(module, nn.Sequential):  # one call, two layers (mean -> pool, flatten)
            first, *rest = list(module)
            tensor_of[node] = add_layer(name, first, src_names)
            for k, part in enumerate(rest, start=1):
                tensor_of[node] = add_layer(f"{name}_{k}", part, (previous,))
        else:
            tensor_of[node] = add_layer(name, module, src_names)
    result = output.args[0]
    if not isinstance(result, fx.Node) or tensor_of.get(result) != previous or not layers:
        raise UserError(
            f"{type(model).__name__}.forward returns something other than its last layer's"
            " output (a tuple or an earlier tensor)"
        )
    stack = LayerGraph(layers, reads) if reads else nn.Sequential(layers)
    _check_same(model, stack, example, expected)
    return stack


def _live(output: fx.Node) -> set[fx.Node]:
    """The nodes the output depends on: what forward computes and never uses is no layer."""
    live: set[fx.Node] = set()
    todo = [output]
    while todo:
        n = todo.pop()
        if n not in live:
            live.add(n)
            todo.extend(n.all_input_nodes)
    return live


def _check_same(
    model: nn.Module, stack: nn.Sequential, example: torch.Tensor, expected: torch.Tensor | None
) -> None:
    was = model.training
    model.eval()
    stack.eval()
    try:
        with torch.no_grad():
            got = stack(example)
            if expected is None:
                # A dropped softmax: the stack's scores must give the model's probabilities.
                expected = model(example)
                got = torch.softmax(got, dim=1)
                if not torch.allclose(expected.exp(), got, atol=1e-5) and not torch.allclose(
                    expected, got, atol=1e-5
                ):
                    raise UserError(
                        f"the captured layers of {type(model).__name__} do not reproduce its"
                        " outputs; its forward does something the IR cannot express"
                    )
                return
    finally:
        model.train(was)
    if got.shape != expected.shape or not torch.allclose(got, expected, atol=1e-5, rtol=1e-4):
        raise UserError(
            f"the captured layers of {type(model).__name__} do not reproduce its outputs; its"
            " forward does something the IR cannot express"
        )


def check_input_shape(
    model: nn.Module, input_shape: Sequence[int], data_name: str
) -> tuple[int, ...]:
    """Refuse, in one line, a model that does not run on ``data_name``'s samples: a wrong data
    set must not end in a torch error after minutes of work, nor fall back silently. Returns
    the shape of one sample's output."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *input_shape))
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"forward returned {type(out).__name__}, not one tensor")
            return tuple(out.shape[1:])
    except Exception as exc:  # noqa: BLE001 - whatever torch says, it is the same mismatch
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{type(model).__name__} does not take {data_name}'s inputs of shape"
            f" {list(input_shape)} ({first}); give its own data set (--data)"
        ) from None
    finally:
        model.train(was_training)


def check_targets(out_shape: Sequence[int], data: Dataset) -> None:
    """Refuse, in one line, labels the model's outputs cannot score: more classes than
    outputs, or a different number of regression targets than outputs."""
    outputs = int(np.prod(out_shape))
    if data.task == "classification":
        if data.num_classes > outputs:
            raise UserError(
                f"data set {data.name!r} has labels 0..{data.num_classes - 1} but the model has"
                f" {outputs} output(s); one output per class is needed"
            )
        return
    per_sample = int(np.prod(data.y_train.shape[1:]))
    if per_sample != outputs:
        raise UserError(
            f"data set {data.name!r} has {per_sample} regression target(s) per sample but the"
            f" model has {outputs} output(s)"
        )
