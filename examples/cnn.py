"""A small CNN on the digits images (1x8x8): the loss falls and test accuracy is printed.

    python examples/cnn.py [--epochs 8] [--quiet]
"""
import argparse

from tqdm import tqdm

import dtrain
import dtrain.nn as nn
import dtrain.optim as optim
from dtrain.data import DataLoader
from dtrain.data.datasets import digits


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(32 * 2 * 2, 10)

    def forward(self, x):
        x = self.pool(nn.functional.relu(self.bn1(self.conv1(x))))   # 16 x 4 x 4
        x = self.pool(nn.functional.relu(self.conv2(x)))             # 32 x 2 x 2
        return self.fc(x.view(x.size(0), -1))


def main(argv=None):
    ap = argparse.ArgumentParser(description="Small CNN on the digits images.")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)

    dtrain.manual_seed(args.seed)
    train_loader = DataLoader(digits(train=True), batch_size=32, shuffle=True)
    test_loader = DataLoader(digits(train=False), batch_size=256)
    model = Net()
    opt = optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for epoch in tqdm(range(args.epochs), desc="epochs", disable=args.quiet or None):
        total, n = 0.0, 0
        for x, y in train_loader:
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            total, n = total + loss.item() * len(y), n + len(y)
        losses.append(total / n)
        model.eval()
        with dtrain.no_grad():
            correct = sum((model(x).argmax(1) == y).sum().item() for x, y in test_loader)
        model.train()
        acc = correct / len(test_loader.dataset)
        print(f"epoch {epoch:2d}  loss {losses[-1]:.4f}  test accuracy {acc:.4f}")
    return losses, acc


if __name__ == "__main__":
    main()
