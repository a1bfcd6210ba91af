"""squeezeforge.hw."""
