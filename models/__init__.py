"""squeezeforge.models."""
