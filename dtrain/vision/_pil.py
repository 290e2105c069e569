"""Pillow, optional: the vision extra installs it; without it, a clear error where it is needed."""
try:
    from PIL import Image
except ImportError:
    Image = None


def require(what):
    """The ``PIL.Image`` module, or ImportError saying ``what`` needs Pillow and how to get it."""
    if Image is None:
        raise ImportError(f"{what} needs Pillow, which is not installed: pip install dtrain[vision] "
                          f"(or pip install pillow)")
    return Image


def is_image(x):
    return Image is not None and isinstance(x, Image.Image)
