"""``python -m dtrain.distributed.run``: torchrun's module path to the launcher, :mod:`dtrain.launch`.

Example:
    python -m dtrain.distributed.run --standalone --nproc_per_node=2 train.py
"""
import sys


def main(argv=None):
    """The launcher's ``main``; imported on the call: the launcher sits above the comm layer
    that ``dtrain.distributed`` gives torch.distributed's names to."""
    from ..launch import main as launch_main
    return launch_main(argv)


if __name__ == "__main__":
    sys.exit(main())
