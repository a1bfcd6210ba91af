"""squeezeforge.cli."""
