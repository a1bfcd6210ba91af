"""squeezeforge.codegen."""
