"""PyTorch's names reach dtrain's objects: a script ports by changing its imports."""
import subprocess
import sys

import dtrain


def test_parallel_wrappers_under_torch_names():
    """nn.DataParallel, nn.SyncBatchNorm and nn.parallel.DistributedDataParallel are
    dtrain.parallel's classes, also via `from dtrain.nn.parallel import ...`."""
    import dtrain.parallel as par
    from dtrain.nn.parallel import DistributedDataParallel
    assert dtrain.nn.DataParallel is par.DataParallel
    assert dtrain.nn.SyncBatchNorm is par.SyncBatchNorm
    assert dtrain.nn.parallel.DistributedDataParallel is DistributedDataParallel is par.DistributedDataParallel


def test_subpackages_after_plain_import():
    """After `import dtrain` alone, the subpackages are the packages (not same-named ops
    modules), and the first use of dtrain.nn.parallel imports it."""
    code = ("import dtrain; assert dtrain.nn.Linear and dtrain.optim.SGD and dtrain.data.DataLoader; "
            "assert dtrain.nn.parallel.DistributedDataParallel; assert dtrain.preemption.EXIT_PREEMPTED == 75")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_unknown_nn_attribute_is_an_attribute_error():
    """A missing name in dtrain.nn raises AttributeError naming it."""
    try:
        dtrain.nn.NoSuchLayer
    except AttributeError as e:
        assert "NoSuchLayer" in str(e)
    else:
        raise AssertionError("dtrain.nn.NoSuchLayer did not raise")


def test_torchvision_import_lines_after_rename():
    """`from torchvision import datasets, transforms` and torchvision.utils' helpers, renamed to
    dtrain.vision, reach dtrain.vision's objects; `torch.utils.data` reaches dtrain.data."""
    from dtrain.vision import datasets, transforms, utils
    import dtrain.vision.transforms.functional as TF
    assert datasets.MNIST and datasets.CIFAR10 and datasets.FakeData
    assert transforms.Compose and transforms.ToTensor and transforms.Normalize and TF.resize
    assert utils.save_image and utils.make_grid
    assert dtrain.utils.data.DataLoader is dtrain.data.DataLoader
