"""A character-level GPT trained with DistributedDataParallel on Python's own standard library.

nanoGPT's shape: token + position embeddings, pre-LayerNorm blocks of causal self-attention
(``F.scaled_dot_product_attention``) and a GELU MLP, the output layer tied to the token
embedding, AdamW with weight decay on the 2-D weights only, a cosine learning-rate schedule
after a linear warm-up, gradient clipping. The corpus is the source text (code, comments,
docstrings) of a fixed list of standard-library modules, read at run time: it is on every
machine that has Python, with no download.

Every step trains on one global batch of ``--batch-size`` sequences drawn from a generator
seeded with (seed, step); each rank takes B/N rows of it, in pieces of at most ``--micro-batch``
rows dealt in rounds (piece j of rank r is rows (j*N + r)*b .. (j*N + r + 1)*b: the layout
deterministic mode's micro-shards assume), their gradients accumulated, and DDP averages them, so
1, 2 or 4 ranks train on the same batches and reach the same loss. Rank 0
shows a progress bar (tqdm), then prints the loss, tokens/s, ranks, wall time and a sample of
generated text. Checkpoints go to ``--checkpoint-dir`` every ``--save-every`` steps and at the
end; ``--resume auto`` continues from the newest intact one (at the same step, with the same
batches), on any number of ranks that divides the global batch: the checkpoint's global batch
is kept, each rank taking at most as many rows per forward as at save and accumulating the
rest (said in the log); SIGTERM saves at the next step and exits 75. ``--deterministic``
gives the same bits at 1, 2 or 4 ranks, straight or resumed (docs/reproducibility.md).

    python examples/gpt.py                                   # one process
    python -m dtrain.launch --nproc 2 examples/gpt.py        # DDP on 2 ranks
    mpirun -n 4 python -m dtrain.launch                      # the launcher's built-in job

It is the launcher's built-in job: ``python -m dtrain.launch [--nproc N]`` with no script
runs this file as the module ``dtrain.examples.gpt``, installed with dtrain.
"""
import argparse
import contextlib
import math
import os
import sys
import sysconfig
import time

import numpy as np

import dtrain
import dtrain.distributed as dist
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain import preemption
from dtrain.checkpoint import CheckpointManager, split_global_batch
from dtrain.nn.parallel import DistributedDataParallel

# The corpus: these standard-library modules' source, in this order (present in every CPython 3)
CORPUS_MODULES = ("textwrap", "argparse", "calendar", "difflib", "heapq", "bisect", "shlex", "fractions",
                  "statistics", "string", "glob", "fnmatch", "queue", "sched", "contextlib", "dataclasses",
                  "functools", "abc", "colorsys", "getopt", "gettext", "imghdr", "netrc", "pprint", "random")


def read_corpus(max_chars):
    """The source text of CORPUS_MODULES (those present), concatenated, at most ``max_chars``."""
    stdlib = sysconfig.get_paths()["stdlib"]
    parts = []
    for name in CORPUS_MODULES:
        path = os.path.join(stdlib, f"{name}.py")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                parts.append(f.read())
    text = "\n".join(parts)[:max_chars]
    if len(text) < 10_000:
        raise RuntimeError(f"the standard library corpus under {stdlib} has only {len(text)} characters")
    return text


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd, n_head, dropout):
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.resid_dropout = nn.Dropout(dropout)
        self.n_head, self.dropout = n_head, dropout

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, T, C)))


class Block(nn.Module):
    def __init__(self, n_embd, n_head, dropout):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd),
                                 nn.Dropout(dropout))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd, dropout=0.0):
        super().__init__()
        self.block_size = block_size
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList([Block(n_embd, n_head, dropout) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight  # weight tying: one matrix embeds and reads out
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith("c_proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx, targets=None):
        T = idx.shape[1]
        x = self.drop(self.wte(idx) + self.wpe(dtrain.arange(T, device=idx.device)))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        loss = None if targets is None else F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))
        return logits, loss

    @dtrain.no_grad()
    def generate(self, idx, new_tokens, temperature=0.8, top_k=20):
        for _ in range(new_tokens):
            logits, _ = self(idx[:, -self.block_size:])
            logits = logits[:, -1, :] / temperature
            v, _ = dtrain.topk(logits, min(top_k, logits.shape[-1]))
            logits = logits.masked_fill(logits < v[:, [-1]], float("-inf"))
            idx = dtrain.cat([idx, dtrain.multinomial(F.softmax(logits, dim=-1), num_samples=1)], dim=1)
        return idx


def configure_optimizer(model, lr, weight_decay):
    """AdamW with decoupled weight decay on the matrices (2-D), none on biases and norms."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return dtrain.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def cosine_with_warmup(warmup, total, min_ratio=0.1):
    """The LR factor at step s: linear warm-up, then cosine decay to ``min_ratio``."""
    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


class Batches:
    """Global batch of step s: rows drawn with a generator seeded (seed, s), whatever the world
    size; each rank reads its rows of it."""

    def __init__(self, data, block_size, batch_size, seed):
        self.data, self.block, self.batch, self.seed = data, block_size, batch_size, seed

    def get(self, step, rows):
        starts = np.random.default_rng([self.seed, step]).integers(0, len(self.data) - self.block - 1, self.batch)
        starts = starts[rows]
        window = np.stack([self.data[s:s + self.block + 1] for s in starts]).astype(np.int64)
        return dtrain.from_numpy(window[:, :-1].copy()), dtrain.from_numpy(window[:, 1:].copy())


def parse_args(argv):
    ap = argparse.ArgumentParser(description="A character-level GPT on Python's standard library, under DDP.")
    ap.add_argument("--steps", type=int, default=600, help="training steps (default 600)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="global batch size, split over the ranks (16; a resumed run keeps the checkpoint's)")
    ap.add_argument("--micro-batch", type=int, default=None, metavar="ROWS",
                    help="most rows per rank in one forward; the rest of the rank's share is gradient accumulation "
                         "(default: the whole share; a run resumed on other ranks: at most the saved run's)")
    ap.add_argument("--deterministic", action="store_true",
                    help="the same bits at any world size: dtrain.use_deterministic_algorithms(True) and DDP "
                         "micro-shards of --micro-shard-size rows (also DTRAIN_DETERMINISTIC=1)")
    ap.add_argument("--micro-shard-size", type=int, default=1, metavar="ROWS",
                    help="rows per micro-shard in deterministic mode (default 1; must divide --micro-batch)")
    ap.add_argument("--block-size", type=int, default=64)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=40, help="warm-up steps")
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--corpus-chars", type=int, default=600_000)
    ap.add_argument("--eval-every", type=int, default=200, help="validation loss every N steps (0: only at the end)")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--checkpoint-dir", default="runs/gpt", metavar="DIR")
    ap.add_argument("--save-every", type=int, default=200, metavar="N", help="checkpoint every N steps")
    ap.add_argument("--resume", choices=["auto"], default=None, help="continue from the newest checkpoint, if any")
    ap.add_argument("--stop-after", type=int, default=None, metavar="K",
                    help="stop after K steps of this run, saving a checkpoint (as if preempted)")
    ap.add_argument("--loss-log", default=None, metavar="FILE",
                    help="rank 0 appends 'step loss' per step, the loss averaged over the ranks")
    ap.add_argument("--sample-chars", type=int, default=200, help="characters to generate at the end")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    for name in ("steps", "batch_size", "micro_batch", "micro_shard_size", "block_size", "n_layer", "n_head",
                 "n_embd", "corpus_chars"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.n_embd % args.n_head:
        ap.error(f"--n-embd {args.n_embd} must be divisible by --n-head {args.n_head}")
    return args


def main(argv=None):
    """Train; returns ``{"loss": final mean training loss, "val_loss": ..., "losses": per-step}``."""
    args = parse_args(argv)
    started = not dist.is_initialized()
    if started:
        dist.init_process_group()
    try:
        return train(args)
    finally:
        if started and dist.is_initialized():
            dist.destroy_process_group()


def mean_over_ranks(value, world):
    t = dtrain.tensor([value], dtype=dtrain.float64)
    if world > 1:
        dist.all_reduce(t)
    return t.item() / world


def train(args):
    rank, world = dist.get_rank(), dist.get_world_size()
    text = read_corpus(args.corpus_chars)
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = np.array([stoi[c] for c in text], dtype=np.int32)
    split = int(0.9 * len(data))
    deterministic = args.deterministic or dtrain.are_deterministic_algorithms_enabled()
    if deterministic:
        dtrain.use_deterministic_algorithms(True)

    dtrain.manual_seed(args.seed)  # the same initial weights on every rank (DDP checks it)
    model = GPT(len(chars), args.block_size, args.n_layer, args.n_head, args.n_embd, args.dropout)
    opt = configure_optimizer(model, args.lr, args.weight_decay)
    sched = dtrain.optim.lr_scheduler.LambdaLR(opt, cosine_with_warmup(args.warmup, args.steps))
    manager = CheckpointManager(args.checkpoint_dir, keep_last=2, prefix="gpt")
    step, global_batch, max_rows = 0, args.batch_size or 16, args.micro_batch
    info = manager.load(model, opt, sched, resume="auto") if args.resume else None
    if info is not None:
        step = info["extra"]["step"]
        saved_batch = info["global_batch"] or global_batch  # a version 1 checkpoint: the option's
        if args.batch_size is not None and args.batch_size != saved_batch:
            raise SystemExit(f"gpt: --batch-size {args.batch_size} differs from the global batch {saved_batch} of "
                             f"{info['path']}: resuming would change the run; leave --batch-size out to keep it, "
                             f"or start afresh in another --checkpoint-dir")
        global_batch = saved_batch
        if max_rows is None:  # a rank never holds more rows in one forward than at save
            max_rows = info["extra"].get("micro_batch")
        if rank == 0:
            print(f"resumed from {info['path']} at step {step}", flush=True)
    try:
        rows, accumulation = split_global_batch(global_batch, world, max_rows)
    except ValueError as e:
        raise SystemExit(f"gpt: {e} (--nproc; --batch-size)") from None
    if info is not None and info["world_size"] not in (None, world) and rank == 0:
        print(f"elastic resume: saved at {info['world_size']} rank(s) x {info['extra'].get('micro_batch')} rows "
              f"x {info['extra'].get('accumulation', 1)} accumulation step(s); now {world} rank(s) x {rows} rows x "
              f"{accumulation} accumulation step(s): global batch {global_batch} kept", flush=True)
    train_batches = Batches(data[:split], args.block_size, global_batch, args.seed)
    val_batches = Batches(data[split:], args.block_size, global_batch, args.seed + 1)
    share = global_batch // world  # this rank's rows of every global batch (evaluation reads [first, first + share))
    first = rank * share
    if deterministic:  # micro-shards at every world size, one rank included: the same shapes everywhere
        net = DistributedDataParallel(model, micro_shard_size=args.micro_shard_size)
    else:
        net = DistributedDataParallel(model) if world > 1 else model
    n_params = sum(p.numel() for p in model.parameters())
    if rank == 0:
        print(f"GPT: {args.n_layer} layers, {args.n_head} heads, {args.n_embd} wide, block {args.block_size}, "
              f"{n_params / 1e6:.2f}M parameters; corpus {len(text):,} characters, vocabulary {len(chars)}; "
              f"{world} rank(s) x batch {share}" + (f" ({accumulation} x {rows} rows)" if accumulation > 1 else "")
              + (f"; deterministic, micro-shards of {args.micro_shard_size}" if deterministic else ""), flush=True)

    def evaluate():
        model.eval()
        with dtrain.no_grad():
            x, y = val_batches.get(0, slice(first, first + share))
            loss = mean_over_ranks(model(x, y)[1].item(), world)
        model.train()
        return loss

    def save():
        manager.save(step, model=model, optimizer=opt, scheduler=sched, global_batch=global_batch,
                     extra={"step": step, "micro_batch": rows, "accumulation": accumulation})

    def forward_backward():
        """This rank's share of the step's global batch, in `accumulation` pieces of `rows`
        rows; DDP averages once, at the last piece. Returns the share's mean loss."""
        total = 0.0
        for j in range(accumulation):
            start = (j * world + rank) * rows  # round j of the pieces (see the module docstring)
            x, y = train_batches.get(step, slice(start, start + rows))
            last = j == accumulation - 1
            with contextlib.nullcontext() if last or net is model else net.no_sync():
                _, loss = net(x, y)
                (loss / accumulation if accumulation > 1 else loss).backward()
            total += loss.item()
        return total / accumulation, x.numel() * accumulation

    from tqdm import tqdm
    losses, tokens, val_loss = [], 0, None
    last = args.steps if args.stop_after is None else min(args.steps, step + args.stop_after)
    log = open(args.loss_log, "a") if args.loss_log and rank == 0 else None
    start = time.perf_counter()
    with preemption.handler() as stop, \
            tqdm(total=args.steps, initial=step, disable=args.quiet or rank != 0 or None, desc="gpt") as bar:
        while step < last:
            opt.zero_grad(set_to_none=True)
            loss, share_tokens = forward_backward()
            if args.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            opt.step()
            sched.step()
            step += 1
            tokens += share_tokens * world
            losses.append(loss)
            if args.loss_log:  # a collective: every rank takes part, rank 0 writes
                mean = mean_over_ranks(losses[-1], world)
                if log:
                    log.write(f"{step} {mean!r}\n")
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            bar.update()
            if args.eval_every and step % args.eval_every == 0 and step < args.steps:
                val_loss = evaluate()
                if rank == 0:
                    bar.write(f"step {step}: train loss {np.mean(losses[-50:]):.4f}, val loss {val_loss:.4f}")
            if stop.should_stop():
                save()
                preemption.exit_preempted(f"rank {rank}: preempted at step {step}; checkpoint saved in "
                                          f"{args.checkpoint_dir}; resume with --resume auto")
            if args.save_every and step % args.save_every == 0:
                save()
    wall = time.perf_counter() - start
    if log:
        log.close()
    save()
    final = mean_over_ranks(float(np.mean(losses[-50:])) if losses else float("nan"), world)
    val_loss = evaluate()
    result = {"loss": final, "val_loss": val_loss, "losses": losses}
    if rank == 0:
        print(f"loss {final:.4f} (last 50 steps; val {val_loss:.4f}) | tokens/s {tokens / max(wall, 1e-9):,.0f} | "
              f"ranks {world} | wall {wall:.1f} s", flush=True)
        if args.sample_chars:
            dtrain.manual_seed(args.seed)
            out = model.generate(dtrain.tensor([[stoi["\n"]]]), args.sample_chars)
            print("sample:\n" + "".join(chars[i] for i in out[0].tolist()), flush=True)
    return result


if __name__ == "__main__":
    main()
    sys.stdout.flush()
