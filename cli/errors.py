"""Errors a user causes: printed as one line by the console script, exit status 2."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """A mistake in what the user asked for (a path, a file, a flag); not a bug in squeezeforge.

    The message is the whole story: ``squeezeforge`` prints it on one line without a traceback.
    """
