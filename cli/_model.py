"""The options that bring a user's own model and data to a subcommand, in one place."""

from __future__ import annotations

import argparse
import json

from squeezeforge.models.data import Dataset, load_dataset
from squeezeforge.models.train import Checkpoint
from squeezeforge.models.user_model import load_model

from .errors import UserError

__all__ = ["MODEL_HELP", "add_model_arguments", "load_model_and_data"]

MODEL_HELP = (
    "a squeezeforge checkpoint, a state_dict (with --model), a pickled nn.Module, or an ONNX file"
)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        metavar="FILE.py:CLASS",
        help="the class that builds the model, for a state_dict (or for a pickled model whose"
        " class is not importable): path/to/file.py:ClassName or module:ClassName",
    )
    p.add_argument(
        "--model-args",
        metavar="JSON",
        help="constructor arguments of --model as a JSON object, e.g. '{\"num_classes\": 10}'",
    )
    p.add_argument(
        "--data",
        metavar="DATA",
        help="the data set: digits (default), digits28 (upsampled to 28x28), an .npz with"
        " x_train, y_train, x_test, y_test, or a folder of MNIST IDX files",
    )
    p.add_argument(
        "--task",
        choices=("classification", "regression"),
        help="what the labels are (default: guessed; whole-number labels (N,) are classes,"
        " float labels with fractions or (N, K) labels are regression targets). A regression"
        " net is scored by MSE and max abs error instead of accuracy",
    )


def load_model_and_data(args: argparse.Namespace) -> tuple[Checkpoint, Dataset]:
    """The model and the data set the arguments name; every problem is one line, and comes
    before any training."""
    model_args = None
    if args.model_args is not None:
        try:
            model_args = json.loads(args.model_args)
        except json.JSONDecodeError as exc:
            raise UserError(f"--model-args is not valid JSON: {exc}") from None
        if not isinstance(model_args, dict):
            raise UserError("--model-args must be a JSON object of keyword arguments")
    ckpt = load_model(args.checkpoint, model=args.model, model_args=model_args)
    data = load_dataset(args.data or "digits", task=args.task)
    return ckpt, data
