"""A training script written for PyTorch runs unchanged on dtrain after only the imports change.

The script below uses the idioms such scripts are made of: a model class calling
``super().__init__()``, ``x.view(x.size(0), -1)``, ``torch.max(outputs.data, 1)``,
``(predicted == labels).sum().item()``, ``model.eval()`` with ``torch.no_grad()``, saving and
loading a state dict, an ``optim.SGD`` step loop over a DataLoader.
"""
import numpy as np

import dtrain as torch
import dtrain.nn as nn
import dtrain.nn.functional as F
import dtrain.optim as optim
from dtrain.data import DataLoader, TensorDataset


class Net(nn.Module):
    def __init__(self, num_classes=3):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(4 * 4 * 4, 16)
        self.dropout = nn.Dropout(0.1)
        self.fc2 = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.pool(F.relu(self.bn(self.conv(x))))
        x = x.view(x.size(0), -1)
        x = self.dropout(F.relu(self.fc1(x)))
        return self.fc2(x)


def _blobs(n, seed):
    """Three classes of 8x8 images: a bright row, column or diagonal, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    images = rng.normal(0, 0.3, (n, 1, 8, 8)).astype(np.float32)
    for img, label in zip(images, labels):
        if label == 0:
            img[0, 3] += 1.5
        elif label == 1:
            img[0, :, 3] += 1.5
        else:
            img[0][np.eye(8, dtype=bool)] += 1.5
    return torch.tensor(images), torch.tensor(labels)


def evaluate(model, loader):
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in loader:
            outputs = model(images)
            _, predicted = torch.max(outputs.data, 1)
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
    return correct / total


def test_pytorch_style_training_script(tmp_path):
    """The script trains a CNN to high accuracy, and a saved-and-reloaded state dict
    reproduces the model's predictions exactly."""
    torch.manual_seed(0)
    train_loader = DataLoader(TensorDataset(*_blobs(240, 0)), batch_size=32, shuffle=True)
    test_loader = DataLoader(TensorDataset(*_blobs(90, 1)), batch_size=45, shuffle=False)

    model = Net()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for epoch in range(3):
        model.train()
        running_loss = 0.0
        for images, labels in train_loader:
            optimizer.zero_grad()
            outputs = model(images)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
    assert running_loss / len(train_loader) < 0.5
    accuracy = evaluate(model, test_loader)
    assert accuracy > 0.9

    path = tmp_path / "model.pth"
    torch.save(model.state_dict(), path)
    restored = Net()
    restored.load_state_dict(torch.load(path))
    assert evaluate(restored, test_loader) == accuracy
    images, _ = next(iter(test_loader))
    with torch.no_grad():
        np.testing.assert_array_equal(restored(images).numpy(), model(images).numpy())
