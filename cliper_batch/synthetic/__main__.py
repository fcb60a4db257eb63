"""``python -m cliper_batch.synthetic``: see :mod:`cliper_batch.synthetic.cli`."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
