"""Train the digits MLP with DataParallel: each batch is split over several devices of one process.

Uses every CUDA device when CuPy sees one, else two CPU replicas running in threads
(``--devices`` picks the number). The training loop is the plain one: only the model is
wrapped, and ``loss.backward()`` sums every replica's gradient into the model's parameters.

    python examples/data_parallel.py [--epochs 10] [--devices 2] [--quiet]
"""
import argparse

from tqdm import tqdm

import dtrain
import dtrain.nn as nn
import dtrain.optim as optim
from dtrain.data import DataLoader
from dtrain.data.datasets import digits
from dtrain.parallel.data_parallel import DataParallel


def build_model():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                         nn.Linear(64, 10))


def evaluate(model, loader, device):
    model.eval()
    correct = total = 0
    with dtrain.no_grad():
        for x, y in loader:
            _, predicted = dtrain.max(model(x), 1)
            correct += (predicted == y.to(device)).sum().item()
            total += y.shape[0]
    model.train()
    return correct / total


def main(argv=None):
    ap = argparse.ArgumentParser(description="The digits MLP trained with DataParallel.")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--devices", type=int, default=None,
                    help="number of devices (default: every CUDA device, else 2 CPU replicas)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or (args.devices is not None and args.devices < 1):
        ap.error(f"--epochs, --batch-size and --devices must be >= 1, got {args.epochs}, {args.batch_size} "
                 f"and {args.devices}")

    n_cuda = dtrain.cuda.device_count()
    if n_cuda:
        device_ids = [f"cuda:{i}" for i in range(n_cuda)][:args.devices or n_cuda]
    else:
        device_ids = ["cpu"] * (args.devices or 2)
    device = dtrain.device(device_ids[0])

    dtrain.manual_seed(args.seed)
    train_set, test_set = digits(train=True), digits(train=False)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True,
                              generator=dtrain.Generator().manual_seed(args.seed))
    test_loader = DataLoader(test_set, batch_size=256)
    model = DataParallel(build_model().to(device), device_ids=device_ids)  # the module must be on device_ids[0]
    opt = optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    print(f"DataParallel over {len(device_ids)} replicas on {', '.join(device_ids)}")

    history = []
    for epoch in tqdm(range(args.epochs), desc="epochs", disable=args.quiet or None):
        total, n = 0.0, 0
        for x, y in train_loader:
            opt.zero_grad()
            loss = loss_fn(model(x), y.to(device))  # outputs are gathered on device_ids[0]
            loss.backward()
            opt.step()
            total += loss.item() * y.shape[0]
            n += y.shape[0]
        history.append(total / n)
        print(f"epoch {epoch:3d}  loss {total / n:.4f}  test accuracy {evaluate(model, test_loader, device):.4f}")
    acc = evaluate(model, test_loader, device)
    print(f"final test accuracy {acc:.4f}")
    return acc, history


if __name__ == "__main__":
    main()
