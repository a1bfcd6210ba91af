"""squeezeforge.cli."""

import os

# The console script trains the same weights on every x86 processor (README, "Two commands"):
# MKL reads this before its first call, so it is set before anything imports torch. A user's
# own setting wins.
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")
