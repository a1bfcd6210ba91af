"""squeezeforge.sim."""
