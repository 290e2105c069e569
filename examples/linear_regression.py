"""Linear regression on synthetic data: recovers the known weights and bias.

    python examples/linear_regression.py [--epochs 30] [--quiet]
"""
import argparse

import numpy as np
from tqdm import tqdm

import dtrain
import dtrain.nn as nn
import dtrain.optim as optim
from dtrain.data import DataLoader, TensorDataset


def main(argv=None):
    ap = argparse.ArgumentParser(description="Fit y = x @ w + b + noise and recover w and b.")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)

    dtrain.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    true_w = rng.standard_normal((5, 1)).astype(np.float32)
    true_b = np.float32(0.7)
    x = rng.standard_normal((2000, 5)).astype(np.float32)
    y = x @ true_w + true_b + 0.01 * rng.standard_normal((2000, 1)).astype(np.float32)
    loader = DataLoader(TensorDataset(dtrain.tensor(x), dtrain.tensor(y)), batch_size=64, shuffle=True)

    model = nn.Linear(5, 1)
    opt = optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    loss_fn = nn.MSELoss()
    for epoch in tqdm(range(args.epochs), desc="epochs", disable=args.quiet or None):
        for xb, yb in loader:
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
    w = model.weight.detach().numpy().reshape(-1)
    b = model.bias.item()
    err = max(np.abs(w - true_w.reshape(-1)).max(), abs(b - true_b))
    print(f"true w {np.round(true_w.reshape(-1), 3)}  b {true_b:.3f}")
    print(f"fit  w {np.round(w, 3)}  b {b:.3f}")
    print(f"max abs error {err:.4f} after {args.epochs} epochs, final loss {loss.item():.5f}")
    return err


if __name__ == "__main__":
    main()
