"""``python -m squeezeforge``: the console script, for environments without it on PATH."""

import sys

from squeezeforge.cli.main import main

sys.exit(main())
