"""The errors the console script turns into one line and exit status 2.

They are defined in :mod:`squeezeforge.sim.errors`, below every layer, so library code raises
them without importing the command line.
"""

from __future__ import annotations

from ..sim.errors import SqueezeforgeError, UserError

__all__ = ["SqueezeforgeError", "UserError"]
