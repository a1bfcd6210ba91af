"""Capture a user's model, whatever its ``forward`` looks like, as a stack of supported layers.

The compression passes and the export read a model as a :class:`torch.nn.Sequential` of leaf
modules in execution order. A user's model rarely is one: it has a custom ``forward`` with
functional calls (``F.relu``, ``F.max_pool2d``, ``torch.flatten``, ``x.view(x.size(0), -1)``),
nested modules and unnamed ``nn.Sequential`` children. :func:`capture` traces it with
:mod:`torch.fx`, follows the one tensor from input to output, turns each functional call into
the equivalent module, and returns the stack. The stack shares the user's parameter tensors
(nothing is copied) and is checked to compute the same outputs as the model on a random input.

A node the IR cannot express (a residual add, a concat, a second input, an unknown function)
is refused with one line naming the operation and where it is in ``forward``, before any
training.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from squeezeforge.sim.errors import UserError

if TYPE_CHECKING:
    from .data import Dataset

__all__ = ["capture", "check_input_shape", "check_targets", "is_stack"]

_RELU_FUNCTIONS = {F.relu, torch.relu, torch.relu_}
_DROPOUT_FUNCTIONS = {F.dropout, torch.dropout}
_FLATTEN_FUNCTIONS = {torch.flatten, torch.reshape}
_FLATTEN_METHODS = {"view", "reshape", "flatten"}
_SOFTMAX = {F.softmax, F.log_softmax, torch.softmax, torch.log_softmax}
_SOFTMAX_MODULES = (nn.Softmax, nn.LogSoftmax)
_RESIDUAL = {operator.add, operator.iadd, torch.add, torch.cat, torch.concat, operator.mul}


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
    if target in _RESIDUAL:
        raise _refuse(
            node,
            "combines two tensors; the IR is a chain of layers (no residual add or concat yet)",
        )
    raise _refuse(
        node,
        "has no equivalent in the IR (supported: Conv2d, Linear, ReLU, max and average pool,"
        " mean over H and W, flatten/view, BatchNorm, Dropout)",
    )


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
    tracer = fx.Tracer()
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
    stack = nn.Sequential()
    current = inputs[0]
    nodes = [n for n in graph.nodes if n.op not in ("placeholder", "output")]
    output = next(n for n in graph.nodes if n.op == "output")
    for i, node in enumerate(nodes):
        if _shape(node) is None:
            # Sizes and other non-tensor values (x.size(0)) only feed a view's arguments.
            continue
        if node.op == "get_attr":
            raise _refuse(node, "reads a tensor attribute directly; use a module instead")
        tensors = _tensor_inputs(node)
        if len(tensors) != 1 or tensors[0] is not current:
            raise _refuse(
                node,
                "combines two tensors or reads an earlier one; the IR is a chain of layers"
                " (no residual add or concat yet)",
            )
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
            current = node
            expected = None  # the stack ends before the softmax: compare the scores instead
            continue
        module = _as_module(node, modules)
        if module is not None:
            name = str(node.target).replace(".", "_") if node.op == "call_module" else node.name
            if isinstance(module, nn.Sequential):  # one call, two layers (mean -> pool, flatten)
                for k, part in enumerate(module):
                    stack.add_module(f"{name}_{k}" if k else name, part)
            else:
                stack.add_module(name, module)
        current = node
    if output.args[0] is not current:
        raise UserError(
            f"{type(model).__name__}.forward returns something other than its last layer's"
            " output (a tuple or an earlier tensor)"
        )
    _check_same(model, stack, example, expected)
    return stack


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
