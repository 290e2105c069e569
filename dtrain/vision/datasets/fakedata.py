"""FakeData: random images, reproducible per index, as ``torchvision.datasets.FakeData``."""
import numbers

from ...data.dataset import Dataset
from ...data.datasets import transformed
from ...tensor import Generator, dtypes, randint, randn
from ..transforms.functional import _to_uint8, image_of


def _check_int(name, value, least):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < least:
        raise ValueError(f"FakeData: {name} must be an int >= {least}, got {value!r}")


class FakeData(Dataset):
    """Random images: item ``i`` is drawn from a generator seeded with ``i + random_offset``
    (dtrain's global RNG is left alone), so it is the same on every read.

    The image is ``randn(*image_size)`` made a PIL image as ``ToPILImage`` does (a uint8
    array without Pillow); the target a 0-d int64 tensor in ``[0, num_classes)``, as
    torchvision's. The values differ from torchvision's: dtrain's generator is not torch's.

    Args:
        size: the number of items.
        image_size: (C, H, W), C in 1..4.
        num_classes: the number of classes.
        transform: applied to each image.
        target_transform: applied to each target.
        random_offset: added to the index to seed each item.

    Example:
        >>> ds = FakeData(size=100, image_size=(3, 32, 32), transform=transforms.ToTensor())
    """

    def __init__(self, size=1000, image_size=(3, 224, 224), num_classes=10, transform=None, target_transform=None,
                 random_offset=0):
        _check_int("size", size, 0)
        _check_int("num_classes", num_classes, 1)
        _check_int("random_offset", random_offset, -2 ** 63)
        if not isinstance(image_size, (list, tuple)) or len(image_size) != 3 or not 1 <= image_size[0] <= 4:
            raise ValueError(f"FakeData: image_size must be (C, H, W) with C in 1..4, got {image_size!r}")
        for s in image_size:
            _check_int("each of image_size", s, 1)
        self.size, self.image_size, self.num_classes = size, tuple(image_size), num_classes
        self.transform, self.target_transform, self.random_offset = transform, target_transform, random_offset

    def __getitem__(self, index):
        if not -self.size <= index < self.size:
            raise IndexError(f"{type(self).__name__} index {index} out of range for size {self.size}")
        index %= self.size
        generator = Generator().manual_seed((index + self.random_offset) % 2 ** 64)
        image = randn(*self.image_size, generator=generator)
        target = randint(0, self.num_classes, size=(1,), dtype=dtypes.int64, generator=generator)[0]
        return transformed(self, image_of(_to_uint8(image.array).transpose(1, 2, 0)), target)

    def __len__(self):
        return self.size
