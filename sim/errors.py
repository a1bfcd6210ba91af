"""One hierarchy for every error the library raises on purpose.

Everything squeezeforge raises for a reason it can explain derives from
:class:`SqueezeforgeError`; the console script prints any of them as one line and exits with
status 2. Errors that mean a bug (``AssertionError``, ``TypeError`` from our own code) stay
outside it, so they keep their traceback.

This module sits at the bottom of the package: it imports nothing of ours, so every layer may
raise these.
"""

from __future__ import annotations

__all__ = ["SqueezeforgeError", "ToolError", "UserError"]


class SqueezeforgeError(Exception):
    """Base of every error squeezeforge raises with a message meant for its user."""


class UserError(SqueezeforgeError):
    """A mistake in what the user asked for (a path, a file, a flag); not a bug in squeezeforge.

    The message is the whole story: ``squeezeforge`` prints it on one line without a traceback.
    """


class ToolError(SqueezeforgeError, RuntimeError):
    """An external tool (Verilator, Yosys, nextpnr) failed; the message says which and where
    its log is."""
