"""cocotb benches that the package itself runs (the simulator imports them by module name)."""
