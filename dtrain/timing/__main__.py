"""``python -m dtrain.timing merge DIR``: merge the ranks' trace files of a job run with
``DTRAIN_TRACE=DIR`` into ``DIR/trace.json`` (see :mod:`dtrain.timing.trace`)."""
import sys

from .trace import merge


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "merge":
        print("usage: python -m dtrain.timing merge DIR   (DIR: the DTRAIN_TRACE directory of a job)",
              file=sys.stderr)
        return 2
    try:
        path = merge(argv[1])
    except FileNotFoundError as e:
        print(f"dtrain.timing: {e}", file=sys.stderr)
        return 1
    print(f"{path} (open it in https://ui.perfetto.dev)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
