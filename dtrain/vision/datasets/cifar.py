"""CIFAR-10 at torchvision's path, read by :class:`dtrain.data.datasets.CIFAR10`."""
import os
import tarfile

from ...data.datasets import cifar
from ._files import PILSamples, require_files

ARCHIVE = "cifar-10-python.tar.gz"


class CIFAR10(PILSamples, cifar.CIFAR10):
    """CIFAR-10 as ``torchvision.datasets.CIFAR10``: samples are (PIL image mode RGB, int label).

    The batches are read from ``root/cifar-10-batches-py`` (torchvision's layout). dtrain
    does not download: with ``download=True`` an archive ``root/cifar-10-python.tar.gz``
    already there is extracted, as torchvision does once it has it.

    Args:
        root: the directory holding ``cifar-10-batches-py``.
        train: the 50,000 images of data_batch_1..5 if True, else the 10,000 of test_batch.
        transform: applied to each PIL image.
        target_transform: applied to each label.
        download: extract ``root/cifar-10-python.tar.gz`` if the batches are missing;
            missing files are an error naming them and where to place them.

    Example:
        >>> test = datasets.CIFAR10("data", train=False, transform=transforms.ToTensor())
    """

    base_folder = "cifar-10-batches-py"

    def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
        root = os.path.expanduser(os.fspath(root))
        folder = os.path.join(root, self.base_folder)
        names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        archive = os.path.join(root, ARCHIVE)
        if download and not all(os.path.isfile(os.path.join(folder, n)) for n in names) and os.path.isfile(archive):
            if not hasattr(tarfile, "data_filter"):
                raise RuntimeError(f"CIFAR10: extracting {archive} needs tarfile's data filter (Python 3.10.12+ "
                                   f"or 3.11.4+); extract it into {root} by hand")
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(root, filter="data")  # the data filter refuses paths outside root
        require_files("CIFAR10", names, [folder, root], download, folder,
                      f"extract {ARCHIVE} from {cifar.URL} into {root}")
        super().__init__(root, train, transform, target_transform)

    @property
    def class_to_idx(self):
        return {c: i for i, c in enumerate(self.classes)}
