"""``python -m dtrain.distributed.run``: torchrun's module path to the launcher, :mod:`dtrain.launch`.

Example:
    python -m dtrain.distributed.run --standalone --nproc_per_node=2 train.py
"""
import sys

from ..launch import main

if __name__ == "__main__":
    sys.exit(main())
