"""The ``squeezeforge`` console script: a thin layer over the package's functions.

Each subcommand lives in its own module ``squeezeforge.cli.<name>`` exposing ``register``
(adds its parser) and sets ``func``; the work itself is done by functions in models/, sim/,
hw/ and codegen/, all callable from Python.
"""

from __future__ import annotations

import _thread
import argparse
import importlib
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

# Nothing heavy is imported at module level: a Ctrl-C while NumPy, PyTorch or Amaranth load must
# land inside main()'s handler, not in the console script's wrapper with a traceback.

__all__ = ["build_parser", "main"]

# Order is the order of the pipeline, which is also the order `--help` lists them in.
SUBCOMMANDS = (
    "info",
    "train",
    "export",
    "compress",
    "reference",
    "generate",
    "simulate",
    "resources",
    "flow",
    "sweep",
)

DESCRIPTION = """\
Compress a trained PyTorch network, generate Verilog for it, simulate its cycles and
resources, and prove the hardware's outputs equal the bit-accurate reference.

typical use:
  squeezeforge train --model cnn -o runs/cnn.pt
  squeezeforge compress runs/cnn.pt --recipe inq5 -o runs/cnn-inq5.sfnet
  squeezeforge reference runs/cnn-inq5.sfnet
  squeezeforge flow            # all of it on the embedded digits data set
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the subcommand (exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _version() -> str:
    from squeezeforge import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="squeezeforge",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"squeezeforge {_version()}",
        help="print the version",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as exc:
            # A subcommand module that is not part of this installation is skipped; a missing
            # dependency inside one is a real error.
            if exc.name == f"{__package__}.{name}":
                continue
            raise
        module.register(sub)
    return parser


def one_line(message: str) -> str:
    """A message on one line: tool errors carry a log tail, the user sees it joined."""
    return " | ".join(line.strip() for line in str(message).splitlines() if line.strip())


@contextmanager
def _interrupts_not_lost() -> Iterator[None]:
    """Python prints and drops a KeyboardInterrupt raised inside a finalizer (``__del__``, such
    as Amaranth's unused-elaboratable check): the command would run on to the end and exit 0
    after a Ctrl-C. Deliver the signal again, so it lands in the command's own code."""
    previous = sys.unraisablehook

    def hook(unraisable: object) -> None:
        exc_type = getattr(unraisable, "exc_type", None)
        if isinstance(exc_type, type) and issubclass(exc_type, KeyboardInterrupt):
            # Raised here, it would land in this hook and be dropped again: raise it from
            # another thread, so it arrives once the finalizer has returned.
            threading.Timer(0.01, _thread.interrupt_main).start()
            return
        previous(unraisable)  # type: ignore[arg-type]

    on_main = threading.current_thread() is threading.main_thread()
    if on_main:
        sys.unraisablehook = hook
    try:
        yield
    finally:
        if on_main:
            sys.unraisablehook = previous


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; exit status 0 done, 1 a result that failed its check (a mismatch),
    2 an error explained in one line, 130 interrupted."""
    command = "squeezeforge"
    try:
        from .errors import SqueezeforgeError

        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        command = f"squeezeforge {args.command}"
        try:
            with _interrupts_not_lost():
                return int(args.func(args) or 0)
        except SqueezeforgeError as exc:
            # Every error the library raises on purpose carries a message meant for the user.
            print(f"{command}: error: {one_line(str(exc))}", file=sys.stderr)
            return 2
        except OSError as exc:
            # The file system said no (a full disk, a vanished folder): not a bug to trace.
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"{command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
            return 2
    except KeyboardInterrupt:
        # Objects dropped half-built (Amaranth's UnusedElaboratable) would warn by the dozen.
        warnings.simplefilter("ignore")
        print(f"{command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
