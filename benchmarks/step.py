"""Time one training step of the reference workloads (../shared/DESIGN.md), side by side.

MLP: batch 256, 784-1024-1024-10, ReLU, cross-entropy, SGD(lr=0.01, momentum=0.9).
CNN: batch 64, 3x32x32, conv3x3(32)+ReLU+maxpool2, conv3x3(64)+ReLU+maxpool2, flatten,
     linear(4096->10), cross-entropy, SGD momentum.
GPT: nanoGPT's shape (examples/gpt.py): 4 pre-LN blocks, 4 heads, 128 wide, block 64, batch 16,
     a 160-character vocabulary, causal F.scaled_dot_product_attention, GELU MLP, the output
     layer tied to the token embedding, AdamW (decay on the matrices), clip_grad_norm_(1.0).
LSTM: pytorch/examples' word_language_model: embedding 256, 2-layer LSTM 256, dropout 0.2,
     seq 35, batch 20, 10,000 words, decoder Linear, log_softmax + NLLLoss, hidden state
     carried (detached) from step to step, clip_grad_norm_(0.25), SGD(lr=20).
The GPT and LSTM models are written once (against a framework module), so both frameworks
build the same model from the same source, and start from the same weights.

Variants run interleaved, round after round, in one process with one BLAS thread, so a noisy
machine slows all of them alike; ratios are the median over rounds of per-round ratios.
  numpy       the same math hand-written in NumPy (the floor for a NumPy backend; MLP only)
  dtrain-raw  raw dtrain tensors and dtrain.nn.functional, SGD written with in-place ops (MLP)
  dtrain-nn   dtrain.nn modules and dtrain.optim.SGD
  torch       PyTorch, where installed

Usage: python benchmarks/step.py [--workload mlp cnn gpt lstm] [--rounds 7] [--steps 5] [--json out.json]
                                [--clock wall|cpu]
(default: all four workloads, wall-clock time). ``--clock cpu`` times with time.thread_time: the
CPU time of this thread, which other processes on a loaded machine barely change (every variant
runs on this one thread: one BLAS thread, torch.set_num_threads(1)).
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_v] = "1"  # before NumPy loads its BLAS

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import dtrain  # noqa: E402

LR, MOMENTUM = 0.01, 0.9


def mlp_init(seed=0):
    rng = np.random.default_rng(seed)
    sizes = [(1024, 784), (1024, 1024), (10, 1024)]
    params = []
    for out, inp in sizes:
        bound = 1 / np.sqrt(inp)
        params += [rng.uniform(-bound, bound, (out, inp)).astype(np.float32),
                   rng.uniform(-bound, bound, out).astype(np.float32)]
    x = rng.standard_normal((256, 784)).astype(np.float32)
    y = rng.integers(0, 10, 256)
    return params, x, y


# ---- MLP, hand-written NumPy --------------------------------------------------------

def numpy_mlp(params, x, y):
    p = [a.copy() for a in params]
    bufs = [np.zeros_like(a) for a in p]
    n = x.shape[0]
    rows = np.arange(n)

    def step():
        w1, b1, w2, b2, w3, b3 = p
        z1 = x @ w1.T + b1
        h1 = np.maximum(z1, 0)
        z2 = h1 @ w2.T + b2
        h2 = np.maximum(z2, 0)
        z3 = h2 @ w3.T + b3
        m = z3.max(axis=1, keepdims=True)
        e = np.exp(z3 - m)
        s = e.sum(axis=1, keepdims=True)
        loss = -(z3[rows, y] - m[:, 0] - np.log(s[:, 0])).mean()
        d3 = e / s
        d3[rows, y] -= 1
        d3 /= n
        grads = [None] * 6
        grads[4], grads[5] = d3.T @ h2, d3.sum(axis=0)
        d2 = (d3 @ w3) * (z2 > 0)
        grads[2], grads[3] = d2.T @ h1, d2.sum(axis=0)
        d1 = (d2 @ w2) * (z1 > 0)
        grads[0], grads[1] = d1.T @ x, d1.sum(axis=0)
        for a, g, b in zip(p, grads, bufs):
            b *= MOMENTUM
            b += g
            a -= LR * b
        return float(loss)
    return step


# ---- MLP, raw dtrain tensors --------------------------------------------------------

def dtrain_raw_mlp(params, x, y):
    import dtrain.nn.functional as F
    p = [dtrain.tensor(a, requires_grad=True) for a in params]
    bufs = [dtrain.zeros_like(t) for t in p]
    xt, yt = dtrain.tensor(x), dtrain.tensor(y)

    def step():
        w1, b1, w2, b2, w3, b3 = p
        h = F.relu(F.linear(xt, w1, b1))
        h = F.relu(F.linear(h, w2, b2))
        loss = F.cross_entropy(F.linear(h, w3, b3), yt)
        for t in p:
            t.grad = None
        loss.backward()
        with dtrain.no_grad():
            for t, b in zip(p, bufs):
                b.mul_(MOMENTUM).add_(t.grad)
                t.sub_(b, alpha=LR)
        return loss.item()
    return step


# ---- dtrain.nn and dtrain.optim -------------------------------------------------------

def _load(model, params):
    with dtrain.no_grad():
        for t, a in zip(model.parameters(), params):
            t.copy_(dtrain.tensor(a))


def _mlp(nn):
    return nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))


def dtrain_nn_mlp(params, x, y):
    nn, optim = dtrain.nn, dtrain.optim
    model = _mlp(nn)
    _load(model, params)
    return _module_step(model, optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM), nn.CrossEntropyLoss(),
                        dtrain.tensor(x), dtrain.tensor(y))


def _module_step(model, opt, loss_fn, xt, yt):
    def step():
        opt.zero_grad()
        loss = loss_fn(model(xt), yt)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def torch_mlp(params, x, y):
    import torch
    nn = torch.nn
    model = _mlp(nn)
    with torch.no_grad():
        for t, a in zip(model.parameters(), params):
            t.copy_(torch.from_numpy(a))
    return _module_step(model, torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM),
                        nn.CrossEntropyLoss(), torch.from_numpy(x), torch.from_numpy(y))


# ---- CNN ------------------------------------------------------------------------------

def cnn_data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((64, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, 64)


def _cnn(nn):
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(4096, 10))


def dtrain_nn_cnn(x, y):
    dtrain.manual_seed(0)
    model = _cnn(dtrain.nn)
    return _module_step(model, dtrain.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM),
                        dtrain.nn.CrossEntropyLoss(), dtrain.tensor(x), dtrain.tensor(y))


def torch_cnn(x, y):
    import torch
    torch.manual_seed(0)
    model = _cnn(torch.nn)
    return _module_step(model, torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM),
                        torch.nn.CrossEntropyLoss(), torch.from_numpy(x), torch.from_numpy(y))


# ---- GPT and LSTM language models, one source for both frameworks -------------------------

GPT_SHAPE = dict(vocab_size=160, block_size=64, n_layer=4, n_head=4, n_embd=128)
GPT_BATCH = 16
LM_SHAPE = dict(ntoken=10_000, ninp=256, nhid=256, nlayers=2, dropout=0.2)
LM_SEQ, LM_BATCH = 35, 20


def _gpt(lib, vocab_size, block_size, n_layer, n_head, n_embd):
    """examples/gpt.py's GPT (dropout 0), written against ``lib`` (dtrain or torch)."""
    nn, F = lib.nn, lib.nn.functional

    class CausalSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(n_embd, 3 * n_embd)
            self.c_proj = nn.Linear(n_embd, n_embd)

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = self.c_attn(x).split(C, dim=2)
            q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.c_proj(y.transpose(1, 2).reshape(B, T, C))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.attn, self.ln_2 = nn.LayerNorm(n_embd), CausalSelfAttention(), nn.LayerNorm(n_embd)
            self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab_size, n_embd), nn.Embedding(block_size, n_embd)
            self.blocks = nn.ModuleList([Block() for _ in range(n_layer)])
            self.ln_f = nn.LayerNorm(n_embd)
            self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
            self.wte.weight = self.lm_head.weight

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(lib.arange(idx.shape[1], device=idx.device))
            for block in self.blocks:
                x = block(x)
            logits = self.lm_head(self.ln_f(x))
            return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))

    return GPT()


def _word_lm(lib, ntoken, ninp, nhid, nlayers, dropout):
    """word_language_model's RNNModel (LSTM, untied), written against ``lib``."""
    nn, F = lib.nn, lib.nn.functional

    class RNNModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = nn.Dropout(dropout)
            self.encoder = nn.Embedding(ntoken, ninp)
            self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout)
            self.decoder = nn.Linear(nhid, ntoken)

        def forward(self, input, hidden):
            output, hidden = self.rnn(self.drop(self.encoder(input)), hidden)
            decoded = self.decoder(self.drop(output)).view(-1, ntoken)
            return F.log_softmax(decoded, dim=1), hidden

    return RNNModel()


def _same_weights(lib, model, seed):
    """Overwrite ``model``'s parameters (in named order, tied ones once) with N(0, 0.05^2) draws
    of ``seed``: the same start for both frameworks."""
    rng = np.random.default_rng(seed)
    with lib.no_grad():
        for _, p in model.named_parameters():
            p.copy_(lib.from_numpy(rng.normal(0, 0.05, tuple(p.shape)).astype(np.float32)))
    return model


def _gpt_step(lib):
    rng = np.random.default_rng(1)
    window = rng.integers(0, GPT_SHAPE["vocab_size"], (GPT_BATCH, GPT_SHAPE["block_size"] + 1))
    x, y = lib.from_numpy(window[:, :-1].copy()), lib.from_numpy(window[:, 1:].copy())
    model = _same_weights(lib, _gpt(lib, **GPT_SHAPE), seed=0)
    params = list(model.parameters())
    opt = lib.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
                           {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                          lr=3e-4, betas=(0.9, 0.95))

    def step():
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        lib.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()
    return step


def _lstm_step(lib):
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, LM_SHAPE["ntoken"], (LM_SEQ + 1, LM_BATCH))
    data, targets = lib.from_numpy(tokens[:-1].copy()), lib.from_numpy(tokens[1:].reshape(-1).copy())
    lib.manual_seed(0)  # the dropout masks
    model = _same_weights(lib, _word_lm(lib, **LM_SHAPE), seed=0)
    params = list(model.parameters())
    opt, criterion = lib.optim.SGD(params, lr=20), lib.nn.NLLLoss()
    shape = (LM_SHAPE["nlayers"], LM_BATCH, LM_SHAPE["nhid"])
    hidden = [(lib.zeros(shape), lib.zeros(shape))]

    def step():
        h = tuple(t.detach() for t in hidden[0])  # truncated BPTT, as repackage_hidden
        model.zero_grad()
        output, hidden[0] = model(data, h)
        loss = criterion(output, targets)
        loss.backward()
        lib.nn.utils.clip_grad_norm_(params, 0.25)
        opt.step()
        return loss.item()
    return step


def _torch():
    import torch
    return torch


# ---- harness --------------------------------------------------------------------------

def _available(name):
    if name == "torch":
        try:
            import torch
            torch.set_num_threads(1)
            return True
        except ImportError:
            return False
    if name == "dtrain-nn":
        try:
            import dtrain.nn  # noqa: F401
            import dtrain.optim  # noqa: F401
            return hasattr(dtrain.nn, "Linear")
        except ImportError:
            return False
    return True


def workloads():
    params, x, y = mlp_init()
    cx, cy = cnn_data()
    return {
        "mlp": {"numpy": lambda: numpy_mlp(params, x, y), "dtrain-raw": lambda: dtrain_raw_mlp(params, x, y),
                "dtrain-nn": lambda: dtrain_nn_mlp(params, x, y), "torch": lambda: torch_mlp(params, x, y)},
        "cnn": {"dtrain-nn": lambda: dtrain_nn_cnn(cx, cy), "torch": lambda: torch_cnn(cx, cy)},
        "gpt": {"dtrain-nn": lambda: _gpt_step(dtrain), "torch": lambda: _gpt_step(_torch())},
        "lstm": {"dtrain-nn": lambda: _lstm_step(dtrain), "torch": lambda: _lstm_step(_torch())},
    }


def run(workload, makers, rounds, steps, clock=time.perf_counter):
    steps_fns = {name: make() for name, make in makers.items() if _available(name)}
    for fn in steps_fns.values():  # warm-up: first-touch allocations, BLAS init
        fn()
    times = {name: [] for name in steps_fns}
    for _ in range(rounds):
        for name, fn in steps_fns.items():
            t0 = clock()
            for _ in range(steps):
                fn()
            times[name].append((clock() - t0) / steps)
    return times


def report(workload, times, baselines, clock="wall"):
    print(f"\n{workload}: {'CPU' if clock == 'cpu' else 'wall-clock'} time per training step (median of rounds), "
          "one BLAS thread")
    print(f"{'variant':<12} {'ms/step':>9}" + "".join(f" {'/ ' + b:>10}" for b in baselines))
    rows = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        ratios = {b: statistics.median(t / u for t, u in zip(ts, times[b])) for b in baselines}
        rows[name] = {"ms_per_step": med * 1e3, "ratios": ratios}
        print(f"{name:<12} {med * 1e3:>9.2f}" + "".join(f" {ratios[b]:>10.3f}" for b in baselines))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = ["mlp", "cnn", "gpt", "lstm"]
    ap.add_argument("--workload", nargs="+", default=names, choices=names)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--json", default=None, help="write the results to this JSON file")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: time.perf_counter; cpu: time.thread_time, robust to other processes on the machine")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.steps < 1:
        ap.error(f"--rounds and --steps must be >= 1, got {args.rounds} and {args.steps}")
    results = {}
    all_workloads = workloads()
    for w in args.workload:
        times = run(w, all_workloads[w], args.rounds, args.steps,
                    clock=time.thread_time if args.clock == "cpu" else time.perf_counter)
        baselines = [b for b in ("numpy", "torch") if b in times]
        results[w] = report(w, times, baselines, args.clock)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rounds": args.rounds, "steps": args.steps, "clock": args.clock, "results": results}, f,
                      indent=2)
    return results


if __name__ == "__main__":
    main()
