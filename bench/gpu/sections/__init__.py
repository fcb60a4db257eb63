"""The GPU benchmark's sections, one module per group (:mod:`bench.gpu.run` runs them in order)."""
