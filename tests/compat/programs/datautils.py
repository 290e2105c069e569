"""The DDP tutorial series' datautils.MyTrainDataset: random (input, target) pairs. Drawn
from NumPy's generator so both frameworks see the same numbers."""
import numpy as np
import torch
from torch.utils.data import Dataset


class MyTrainDataset(Dataset):
    def __init__(self, size):
        self.size = size
        rng = np.random.default_rng(0)
        self.data = [(torch.from_numpy(rng.random(20, dtype=np.float32)),
                      torch.from_numpy(rng.random(1, dtype=np.float32))) for _ in range(size)]

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        return self.data[index]
