"""The device check's phases, one module each (:mod:`bench.gpu.device_check` runs them in order)."""
