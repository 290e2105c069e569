"""Backward frees the graph: 10,000 training steps of a small MLP keep memory flat.

The steps run in a fresh interpreter (this file run as a script): in the test process,
allocator state left by earlier tests (PyTorch's, say) makes resident memory drift for
thousands of steps, which would hide a real leak or fake one."""
import gc
import json
import os
import resource
import subprocess
import sys

import dtrain

linear = dtrain.nn.functional.linear
STEPS, WARMUP = 10_000, 1_000
GPT_STEPS, GPT_WARMUP = 200, 50


def _footprint():
    """(live GC-tracked objects, resident memory in KiB): a leaked graph grows the first, a
    leaked array buffer the second. Current RSS where /proc has it, else the peak."""
    gc.collect()
    try:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except OSError:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return len(gc.get_objects()), rss


def train_and_measure():
    """Run a 2-layer MLP for STEPS steps (a post-accumulate hook per parameter, as DDP
    registers, and an in-place SGD update under no_grad); the footprint after WARMUP and
    after STEPS steps, and the first and last loss."""
    dtrain.manual_seed(0)
    params = [dtrain.randn(8, 4, requires_grad=True), dtrain.zeros(8, requires_grad=True),
              dtrain.randn(3, 8, requires_grad=True), dtrain.zeros(3, requires_grad=True)]
    ready = []
    for p in params:
        p.register_post_accumulate_grad_hook(ready.append)
    x, target = dtrain.randn(16, 4), dtrain.randn(16, 3)

    def step():
        out = linear(linear(x, params[0], params[1]).tanh(), params[2], params[3])
        loss = ((out - target) ** 2).mean()
        loss.backward()
        assert len(ready) == len(params)
        ready.clear()
        with dtrain.no_grad():
            for p in params:
                p.sub_(p.grad, alpha=0.05)
                p.grad.zero_()
        return loss.item()

    first = step()
    for _ in range(WARMUP - 1):
        step()
    objects, rss = _footprint()
    for _ in range(STEPS - WARMUP):
        last = step()
    objects_end, rss_end = _footprint()
    return {"first": first, "last": last, "objects": objects_end - objects, "rss_kib": rss_end - rss}


def _measure_in_fresh_interpreter(*args):
    run = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_training_steps_keep_memory_flat():
    """From step 1,000 to step 10,000 no Python object survives its step and resident memory
    grows by less than 512 KiB (a leak of ~60 bytes a step would exceed it)."""
    m = _measure_in_fresh_interpreter()
    assert m["last"] < m["first"], "the loss did not go down: the steps did not train as intended"
    assert m["objects"] < 50, f"{m['objects']} objects leaked over {STEPS - WARMUP} steps"
    assert m["rss_kib"] < 512, f"resident memory grew by {m['rss_kib']} KiB over {STEPS - WARMUP} steps"


def gpt_train_and_measure():
    """Train a tiny examples/gpt.py GPT (2 layers, 2 heads, 32 wide, block 16, batch 8) as
    the example does (AdamW with its two groups, clip_grad_norm_) for GPT_STEPS steps on
    batches of a fixed periodic token stream; the footprint after GPT_WARMUP and after
    GPT_STEPS steps, and the first and last loss."""
    from dtrain.examples.gpt import GPT, configure_optimizer

    dtrain.manual_seed(0)
    model = GPT(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=32)
    opt = configure_optimizer(model, lr=3e-3, weight_decay=0.1)
    stream = dtrain.arange(2_000) * 7 % 40  # learnable: each token follows from the one before
    starts = dtrain.randint(0, 2_000 - 17, (GPT_STEPS, 8))

    def step(i):
        rows = dtrain.stack([stream[s:s + 17] for s in starts[i].tolist()])
        _, loss = model(rows[:, :-1], rows[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        dtrain.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    first = step(0)
    for i in range(1, GPT_WARMUP):
        step(i)
    objects, rss = _footprint()
    for i in range(GPT_WARMUP, GPT_STEPS):
        last = step(i)
    objects_end, rss_end = _footprint()
    return {"first": first, "last": last, "objects": objects_end - objects, "rss_kib": rss_end - rss}


def test_gpt_training_keeps_memory_flat():
    """A GPT (embeddings, causal attention, layer norm, GELU, weight tying, AdamW, clipping)
    trained from step 50 to step 200: no Python object survives its step and resident memory
    grows by less than 512 KiB (a leaked activation of one step is 16 KiB or more)."""
    m = _measure_in_fresh_interpreter("gpt")
    assert m["last"] < m["first"] - 1, f"the loss went from {m['first']} to {m['last']}: the GPT did not train"
    assert m["objects"] < 50, f"{m['objects']} objects leaked over {GPT_STEPS - GPT_WARMUP} GPT steps"
    assert m["rss_kib"] < 512, f"resident memory grew by {m['rss_kib']} KiB over {GPT_STEPS - GPT_WARMUP} GPT steps"


if __name__ == "__main__":
    print(json.dumps(gpt_train_and_measure() if sys.argv[1:] == ["gpt"] else train_and_measure()))
