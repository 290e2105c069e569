"""What the vision datasets share: samples as PIL images, and the missing-files error."""
import os

from ..transforms.functional import image_of


class PILSamples:
    """Mixin over an ``ImageDataset`` reader: the sample image is a PIL image (as
    torchvision's), or a uint8 (H, W[, C]) array when Pillow is not installed."""

    def _convert(self, chw):
        return image_of(chw.transpose(1, 2, 0))


def require_files(dataset, names, dirs, download, where, source, gz=False):
    """Raise FileNotFoundError naming every one of ``names`` that no directory in ``dirs``
    holds (also as ``.gz`` if ``gz``), where to place them and where they come from."""
    suffixes = ("", ".gz") if gz else ("",)
    missing = [n for n in names if not any(os.path.isfile(os.path.join(d, n + s)) for d in dirs for s in suffixes)]
    if not missing:
        return
    files = ", ".join(f"{n}{'(.gz)' if gz else ''}" for n in missing)
    why = "download=True, but dtrain does not download datasets" if download else "dataset not found"
    raise FileNotFoundError(f"{dataset}: {why}: place {files} in {where} ({source})")
