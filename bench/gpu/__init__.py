"""The GPU benchmark (``python -m bench.gpu.run`` from the repository root)."""
