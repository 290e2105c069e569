"""Optimizers: trajectories against their update rules in NumPy and against PyTorch,
state_dict round trips, zero_grad, closures, parameter groups and every error path.

The problem is least squares, ``0.5 * mean ||X W + b - Y||^2``, with its gradient written
in NumPy and assigned to ``.grad``, so each test checks the optimizer alone.
"""
import numpy as np
import pytest

import dtrain
from dtrain.optim import LBFGS, SGD, Adadelta, Adagrad, Adam, Adamax, AdamW, NAdam, Optimizer, RAdam, RMSprop

STEPS = 20
_rng = np.random.default_rng(1)
X, Y = _rng.standard_normal((16, 4)), _rng.standard_normal((16, 3))
INIT = [_rng.standard_normal((4, 3)), _rng.standard_normal(3)]


def grads(params):
    w, b = params
    r = X @ w + b - Y
    return [X.T @ r / len(X), r.sum(0) / len(X)]


# ---- the update rules, written plainly from the algorithms' definitions -------------------

def ref_sgd(p, g, s, t, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, maximize=False):
    g = (-g if maximize else g) + weight_decay * p
    if momentum:
        s["b"] = g if t == 1 else momentum * s["b"] + (1 - dampening) * g
        g = g + momentum * s["b"] if nesterov else s["b"]
    return p - lr * g


def ref_adam(p, g, s, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, maximize=False,
             decoupled_weight_decay=False):
    b1, b2 = betas
    g = -g if maximize else g
    if decoupled_weight_decay:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
    s["v"] = v = b2 * s.get("v", 0) + (1 - b2) * g * g
    if amsgrad:
        s["vmax"] = v = np.maximum(s.get("vmax", 0), v)
    return p - lr * (s["m"] / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)


def ref_adamw(p, g, s, t, weight_decay=1e-2, **hp):
    return ref_adam(p, g, s, t, weight_decay=weight_decay, decoupled_weight_decay=True, **hp)


def ref_rmsprop(p, g, s, t, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                maximize=False):
    g = (-g if maximize else g) + weight_decay * p
    s["v"] = v = alpha * s.get("v", 0) + (1 - alpha) * g * g
    if centered:
        s["ga"] = alpha * s.get("ga", 0) + (1 - alpha) * g
        v = v - s["ga"] ** 2
    u = g / (np.sqrt(v) + eps)
    if momentum:
        s["b"] = u = momentum * s.get("b", 0) + u
    return p - lr * u


def ref_adagrad(p, g, s, t, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                maximize=False):
    g = (-g if maximize else g) + weight_decay * p
    s["sum"] = s.get("sum", initial_accumulator_value) + g * g
    return p - lr / (1 + (t - 1) * lr_decay) * g / (np.sqrt(s["sum"]) + eps)


def ref_adadelta(p, g, s, t, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, maximize=False):
    g = (-g if maximize else g) + weight_decay * p
    s["v"] = rho * s.get("v", 0) + (1 - rho) * g * g
    delta = np.sqrt(s.get("u", 0) + eps) / np.sqrt(s["v"] + eps) * g
    s["u"] = rho * s.get("u", 0) + (1 - rho) * delta * delta
    return p - lr * delta


def ref_adamax(p, g, s, t, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, maximize=False):
    b1, b2 = betas
    g = (-g if maximize else g) + weight_decay * p
    s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
    s["u"] = np.maximum(b2 * s.get("u", 0), np.abs(g) + eps)
    return p - lr / (1 - b1 ** t) * s["m"] / s["u"]


def ref_nadam(p, g, s, t, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, momentum_decay=4e-3,
              decoupled_weight_decay=False, maximize=False):
    b1, b2 = betas
    g = -g if maximize else g
    if decoupled_weight_decay:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    mu, mu_next = (b1 * (1 - 0.5 * 0.96 ** (k * momentum_decay)) for k in (t, t + 1))
    s["prod"] = prod = s.get("prod", 1.0) * mu
    s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
    denom = np.sqrt(s["v"] / (1 - b2 ** t)) + eps
    return p - lr * ((1 - mu) / (1 - prod) * g + mu_next / (1 - prod * mu_next) * s["m"]) / denom


def ref_radam(p, g, s, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, decoupled_weight_decay=False,
              maximize=False):
    b1, b2 = betas
    g = -g if maximize else g
    if decoupled_weight_decay:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
    m_hat = s["m"] / (1 - b1 ** t)
    rho_inf = 2 / (1 - b2) - 1
    rho = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
    if rho <= 5:  # the variance of the adaptive step is not yet tractable: plain momentum
        return p - lr * m_hat
    r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
    return p - lr * m_hat * r * np.sqrt(1 - b2 ** t) / (np.sqrt(s["v"]) + eps)


REFS = {SGD: ref_sgd, Adam: ref_adam, AdamW: ref_adamw, RMSprop: ref_rmsprop, Adagrad: ref_adagrad,
        Adadelta: ref_adadelta, Adamax: ref_adamax, NAdam: ref_nadam, RAdam: ref_radam}

CASES = [
    (SGD, dict(lr=0.1)),
    (SGD, dict(lr=0.1, momentum=0.9)),
    (SGD, dict(lr=0.1, momentum=0.9, dampening=0.3)),
    (SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
    (SGD, dict(lr=0.1, weight_decay=0.1)),
    (SGD, dict(lr=0.1, maximize=True)),
    (SGD, dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.05, maximize=True)),
    (Adam, dict(lr=0.05)),
    (Adam, dict(lr=0.05, weight_decay=0.1)),
    (Adam, dict(lr=0.05, amsgrad=True)),
    (Adam, dict(lr=0.05, maximize=True)),
    (Adam, dict(lr=0.05, betas=(0.8, 0.99), eps=1e-3)),
    (Adam, dict(lr=0.05, amsgrad=True, weight_decay=0.1, maximize=True)),
    (Adam, dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True)),
    (AdamW, dict(lr=0.05)),
    (AdamW, dict(lr=0.05, weight_decay=0.2, amsgrad=True)),
    (AdamW, dict(lr=0.05, maximize=True)),
    (RMSprop, dict(lr=0.01)),
    (RMSprop, dict(lr=0.01, centered=True)),
    (RMSprop, dict(lr=0.01, momentum=0.9)),
    (RMSprop, dict(lr=0.01, weight_decay=0.1)),
    (RMSprop, dict(lr=0.01, alpha=0.9, eps=1e-4)),
    (RMSprop, dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.05, maximize=True)),
    (Adagrad, dict(lr=0.1)),
    (Adagrad, dict(lr=0.1, lr_decay=0.1)),
    (Adagrad, dict(lr=0.1, weight_decay=0.1)),
    (Adagrad, dict(lr=0.1, initial_accumulator_value=0.5)),
    (Adagrad, dict(lr=0.1, eps=1e-3, maximize=True)),
    (Adadelta, dict(lr=1.0)),
    (Adadelta, dict(lr=0.5, rho=0.5)),
    (Adadelta, dict(lr=1.0, eps=1e-3)),
    (Adadelta, dict(lr=1.0, weight_decay=0.1)),
    (Adadelta, dict(lr=1.0, maximize=True)),
    (Adadelta, dict(lr=0.5, rho=0.8, weight_decay=0.05, maximize=True)),
    (Adamax, dict(lr=0.05)),
    (Adamax, dict(lr=0.05, betas=(0.8, 0.99), eps=1e-3)),
    (Adamax, dict(lr=0.05, weight_decay=0.1)),
    (Adamax, dict(lr=0.05, maximize=True)),
    (Adamax, dict(lr=0.05, weight_decay=0.1, maximize=True)),
    (NAdam, dict(lr=0.05)),
    (NAdam, dict(lr=0.05, momentum_decay=0.1)),
    (NAdam, dict(lr=0.05, weight_decay=0.1)),
    (NAdam, dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True)),
    (NAdam, dict(lr=0.05, maximize=True)),
    (NAdam, dict(lr=0.05, betas=(0.8, 0.99), eps=1e-3, weight_decay=0.1, decoupled_weight_decay=True,
                 maximize=True)),
    (RAdam, dict(lr=0.05)),
    (RAdam, dict(lr=0.05, betas=(0.8, 0.9), eps=1e-3)),
    (RAdam, dict(lr=0.05, weight_decay=0.1)),
    (RAdam, dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True)),
    (RAdam, dict(lr=0.05, maximize=True)),
    (RAdam, dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
]
IDS = [f"{cls.__name__}-{'-'.join(f'{k}={v}' for k, v in hp.items())}" for cls, hp in CASES]


def run_reference(cls, hp, steps=STEPS):
    params, states, traj = [a.copy() for a in INIT], [{} for _ in INIT], []
    for t in range(1, steps + 1):
        params = [REFS[cls](p, g, s, t, **hp) for p, g, s in zip(params, grads(params), states)]
        traj.append(params)
    return traj


def make_params(dtype=np.float64):
    return [dtrain.tensor(a.astype(dtype), requires_grad=True) for a in INIT]


def run(opt, params, steps):
    """Step ``opt`` with the least-squares gradient; the parameter values after each step."""
    traj = []
    for _ in range(steps):
        for p, g in zip(params, grads([p.detach().numpy() for p in params])):
            p.grad = dtrain.tensor(g.astype(p.dtype))
        opt.step()
        traj.append([p.detach().numpy().copy() for p in params])
    return traj


def run_torch(cls, hp, steps=STEPS, dtype=np.float64):
    torch = pytest.importorskip("torch")
    params = [torch.tensor(a.astype(dtype), requires_grad=True) for a in INIT]
    opt = getattr(torch.optim, cls.__name__)(params, **hp)
    traj = []
    for _ in range(steps):
        for p, g in zip(params, grads([p.detach().numpy() for p in params])):
            p.grad = torch.tensor(g.astype(dtype))
        opt.step()
        traj.append([p.detach().numpy().copy() for p in params])
    return traj, opt


def assert_same_trajectory(actual, expected, rtol=1e-6, atol=1e-9):
    for t, (a_step, e_step) in enumerate(zip(actual, expected), 1):
        for a, e in zip(a_step, e_step):
            np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=f"after step {t}")


@pytest.mark.parametrize("cls, hp", CASES, ids=IDS)
def test_trajectory_matches_update_rule(cls, hp):
    """20 steps follow the optimizer's update rule, written in NumPy, to 1e-6 relative."""
    params = make_params()
    assert_same_trajectory(run(cls(params, **hp), params, STEPS), run_reference(cls, hp))


@pytest.mark.parametrize("cls, hp", CASES, ids=IDS)
def test_trajectory_matches_torch(cls, hp):
    """20 steps follow PyTorch's optimizer with the same options, to 1e-6 relative."""
    expected, _ = run_torch(cls, hp)
    params = make_params()
    assert_same_trajectory(run(cls(params, **hp), params, STEPS), expected)


@pytest.mark.parametrize("cls, hp", [c for c in CASES if len(c[1]) > 1], ids=[i for i, c in zip(IDS, CASES)
                                                                              if len(c[1]) > 1])
def test_each_option_changes_the_trajectory(cls, hp):
    """Every option the trajectory tests set really changes the update (none is ignored)."""
    plain = {"lr": hp["lr"]}
    with_option, without = run_reference(cls, hp, 5), run_reference(cls, plain, 5)
    assert not np.allclose(with_option[-1][0], without[-1][0], rtol=1e-6, atol=0)


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW, RMSprop, Adagrad, Adadelta, Adamax, NAdam, RAdam, LBFGS])
def test_defaults_match_torch(cls):
    """Constructor defaults (lr, betas, eps, weight_decay, ...) equal PyTorch's."""
    torch = pytest.importorskip("torch")
    ours = cls(make_params()).defaults
    theirs = getattr(torch.optim, cls.__name__)([torch.zeros(1, requires_grad=True)]).defaults
    assert ours == {k: theirs[k] for k in ours}


@pytest.mark.parametrize("cls, hp", [(SGD, dict(lr=0.1, momentum=0.9)), (Adam, dict(lr=0.05, amsgrad=True)),
                                     (RMSprop, dict(lr=0.01, centered=True, momentum=0.5)), (Adagrad, dict(lr=0.1)),
                                     (Adadelta, dict(weight_decay=0.1)), (Adamax, dict(lr=0.05)),
                                     (NAdam, dict(lr=0.05, weight_decay=0.1)), (RAdam, dict(lr=0.05))])
def test_float32_keeps_dtype_and_matches_torch(cls, hp):
    """float32 parameters stay float32 (no float64 upcast in the step), their state is
    float32, and the trajectory follows PyTorch's in float32."""
    expected, _ = run_torch(cls, hp, 10, np.float32)
    params = make_params(np.float32)
    opt = cls(params, **hp)
    assert_same_trajectory(run(opt, params, 10), expected, rtol=1e-4, atol=1e-6)
    assert all(p.dtype == dtrain.float32 for p in params)
    for s in opt.state.values():
        assert all(v.dtype == dtrain.float32 for v in s.values())


def test_step_updates_in_place_and_keeps_leaves():
    """A step writes into each parameter's existing array (views of it see the update), and
    the parameters stay leaves that require grad, with no graph attached."""
    params = make_params()
    arrays = [p.array for p in params]
    run(Adam(params, lr=0.1), params, 3)
    for p, a in zip(params, arrays):
        assert p.array is a
        assert p.is_leaf and p.grad_fn is None and p.requires_grad


def test_params_without_grad_are_skipped():
    """A parameter whose grad is None is left unchanged and gets no state."""
    params = make_params()
    frozen = dtrain.tensor(np.ones(5), requires_grad=True)
    opt = Adam(params + [frozen], lr=0.1)
    run(opt, params, 3)
    np.testing.assert_array_equal(frozen.detach().numpy(), np.ones(5))
    assert frozen not in opt.state and len(opt.state) == 2


# ---- state_dict ----------------------------------------------------------------------------

@pytest.mark.parametrize("cls, hp", [c for c in CASES if c[0] is not SGD or "momentum" in c[1]],
                         ids=[i for i, c in zip(IDS, CASES) if c[0] is not SGD or "momentum" in c[1]])
def test_state_dict_round_trip_continues_trajectory(cls, hp):
    """A new optimizer loaded from a state_dict after 10 steps continues exactly as the
    original does (NAdam to 1e-9: loading casts its float32 mu_product to the parameter's
    dtype, as PyTorch's load_state_dict does), and its state is a copy (stepping the
    original leaves it alone)."""
    params = make_params()
    opt = cls(params, **hp)
    run(opt, params, 10)
    clones = [dtrain.tensor(p.detach().numpy().copy(), requires_grad=True) for p in params]
    loaded = cls(clones, lr=123.0)
    loaded.load_state_dict(opt.state_dict())
    assert loaded.param_groups[0]["lr"] == hp["lr"]
    loaded_state = {k: v.numpy().copy() for k, v in loaded.state[clones[0]].items()}
    after = run(opt, params, 10)
    for k, v in loaded.state[clones[0]].items():
        np.testing.assert_array_equal(v.numpy(), loaded_state[k])
    for a, b in zip(run(loaded, clones, 10)[-1], after[-1]):
        np.testing.assert_allclose(a, b, rtol=1e-9 if cls is NAdam else 0, atol=0)


@pytest.mark.parametrize("cls, hp", [(SGD, dict(lr=0.1, momentum=0.9)), (Adam, dict(amsgrad=True)),
                                     (AdamW, {}), (RMSprop, dict(centered=True, momentum=0.9)), (Adagrad, {}),
                                     (Adadelta, {}), (Adamax, {}), (NAdam, {}), (RAdam, {})])
def test_state_dict_layout_matches_torch(cls, hp):
    """state_dict has PyTorch's layout: params as indices over all groups, the same state
    names per parameter holding dtrain Tensors of PyTorch's values, the same group keys."""
    _, topt = run_torch(cls, hp, 3)
    params = make_params()
    opt = cls([{"params": params[:1]}, {"params": params[1:]}], **hp)
    run(opt, params, 3)
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0], [1]]
    assert set(sd["param_groups"][0]) <= set(tsd["param_groups"][0]) | {"params"}
    for i in (0, 1):
        assert set(sd["state"][i]) == set(tsd["state"][i])
        for name, value in sd["state"][i].items():
            assert isinstance(value, dtrain.Tensor)
            np.testing.assert_allclose(value.numpy(), tsd["state"][i][name].numpy(), rtol=1e-6, atol=1e-12)


def test_optimizer_pickles_with_a_scheduler_attached():
    """An optimizer pickles with its state even after an lr scheduler wrapped its step."""
    import pickle
    params = make_params()
    opt = SGD(params, lr=0.1, momentum=0.9)
    dtrain.optim.lr_scheduler.StepLR(opt, step_size=2)
    run(opt, params, 2)
    copy = pickle.loads(pickle.dumps(opt))
    assert copy.param_groups[0]["lr"] == 0.1
    np.testing.assert_array_equal(next(iter(copy.state.values()))["momentum_buffer"].numpy(),
                                  opt.state[params[0]]["momentum_buffer"].numpy())


def test_load_state_dict_refuses_other_group_count():
    """A state_dict with a different number of groups is refused, naming both counts."""
    params = make_params()
    two = SGD([{"params": params[:1]}, {"params": params[1:]}], lr=0.1)
    with pytest.raises(ValueError, match="2 parameter groups, but the optimizer has 1"):
        SGD(make_params(), lr=0.1).load_state_dict(two.state_dict())


def test_load_state_dict_refuses_other_param_count():
    """A state_dict whose group has a different number of parameters is refused, naming both."""
    saved = SGD(make_params(), lr=0.1).state_dict()
    with pytest.raises(ValueError, match="group 0 has 2 parameters, but the optimizer's group 0 has 1"):
        SGD(make_params()[:1], lr=0.1).load_state_dict(saved)


# (optimizer, its options, build(lr_scheduler module, optimizer)): a scheduler that moves
# beta1 or momentum is part of the optimizer's state, so both are saved and loaded together
RESUMED = [
    (NAdam, dict(lr=0.05), lambda m, o: m.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=3)),
    (SGD, dict(lr=0.1, momentum=0.9), lambda m, o: m.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=2,
                                                              mode="triangular2")),
    (Adadelta, dict(weight_decay=0.1), lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2)),
    (RAdam, dict(lr=0.05, decoupled_weight_decay=True, weight_decay=0.1),
     lambda m, o: m.ChainedScheduler([m.ConstantLR(o, factor=0.5, total_iters=5), m.ExponentialLR(o, gamma=0.9)])),
    (Adamax, dict(lr=0.05), lambda m, o: m.PolynomialLR(o, total_iters=12, power=2.0)),
]


@pytest.mark.parametrize("cls, hp, build", RESUMED, ids=[f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(RESUMED)])
def test_optimizer_and_scheduler_resume_from_a_checkpoint(cls, hp, build):
    """An optimizer and its scheduler saved with dtrain.save after 8 steps and loaded into
    fresh ones continue as the uninterrupted pair does (NAdam to 1e-9: loading casts its
    mu_product to the parameters' dtype), and the uninterrupted pair follows PyTorch's
    optimizer and scheduler over all 16 steps."""
    import io
    torch = pytest.importorskip("torch")
    sched = dtrain.optim.lr_scheduler

    def steps(opt, scheduler, params, n):
        out = []
        for _ in range(n):
            out += run(opt, params, 1)
            scheduler.step()
        return out

    params = make_params()
    opt = cls(params, **hp)
    scheduler = build(sched, opt)
    first = steps(opt, scheduler, params, 8)
    buffer = io.BytesIO()
    dtrain.save({"optimizer": opt.state_dict(), "scheduler": scheduler.state_dict()}, buffer)
    buffer.seek(0)
    saved = dtrain.load(buffer)
    clones = [dtrain.tensor(p.detach().numpy().copy(), requires_grad=True) for p in params]
    resumed_opt = cls(clones, **hp)
    resumed = build(sched, resumed_opt)
    resumed_opt.load_state_dict(saved["optimizer"])
    resumed.load_state_dict(saved["scheduler"])
    rest = steps(opt, scheduler, params, 8)
    assert_same_trajectory(steps(resumed_opt, resumed, clones, 8), rest, rtol=1e-9 if cls is NAdam else 0, atol=0)
    assert resumed.get_last_lr() == scheduler.get_last_lr()

    tparams = [torch.tensor(a, requires_grad=True) for a in INIT]
    topt = getattr(torch.optim, cls.__name__)(tparams, **hp)
    tscheduler = build(torch.optim.lr_scheduler, topt)
    expected = []
    for _ in range(16):
        for p, g in zip(tparams, grads([p.detach().numpy() for p in tparams])):
            p.grad = torch.tensor(g)
        topt.step()
        tscheduler.step()
        expected.append([p.detach().numpy().copy() for p in tparams])
    assert_same_trajectory(first + rest, expected)


# ---- zero_grad, closure, groups ------------------------------------------------------------

@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad(set_to_none):
    """zero_grad sets grads to None by default, or zeroes the existing grad in place."""
    params = make_params()
    opt = SGD(params, lr=0.1)
    run(opt, params, 1)
    old = [p.grad for p in params]
    opt.zero_grad(set_to_none=set_to_none)
    for p, g in zip(params, old):
        if set_to_none:
            assert p.grad is None
        else:
            assert p.grad is g and not g.numpy().any()


def test_closure_is_evaluated_with_grad_and_its_loss_returned():
    """step(closure) re-evaluates the loss with grad enabled (even inside no_grad), uses the
    gradients it computes, and returns its loss."""
    w0 = INIT[0]
    w = dtrain.tensor(w0.copy(), requires_grad=True)
    opt = SGD([w], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = ((dtrain.tensor(X) @ w - dtrain.tensor(Y)) ** 2).sum() * (0.5 / len(X))
        loss.backward()
        return loss

    with dtrain.no_grad():
        loss = opt.step(closure)
    r = X @ w0 - Y
    np.testing.assert_allclose(loss.item(), 0.5 * (r ** 2).sum() / len(X))
    np.testing.assert_allclose(w.detach().numpy(), w0 - 0.1 * X.T @ r / len(X))


def test_param_groups_with_different_lr_match_torch():
    """Each group uses its own lr and the defaults for what it leaves out, as in PyTorch."""
    torch = pytest.importorskip("torch")
    params = make_params()
    opt = SGD([{"params": params[:1], "lr": 0.2}, {"params": params[1:]}], lr=0.01, momentum=0.9)
    assert [g["lr"] for g in opt.param_groups] == [0.2, 0.01]
    tparams = [torch.tensor(a, requires_grad=True) for a in INIT]
    topt = torch.optim.SGD([{"params": tparams[:1], "lr": 0.2}, {"params": tparams[1:]}], lr=0.01, momentum=0.9)
    traj = run(opt, params, STEPS)
    for _ in range(STEPS):
        for p, g in zip(tparams, grads([p.detach().numpy() for p in tparams])):
            p.grad = torch.tensor(g)
        topt.step()
    for a, p in zip(traj[-1], tparams):
        np.testing.assert_allclose(a, p.detach().numpy(), rtol=1e-6)


def test_add_param_group_later():
    """A group added after construction takes the defaults and is stepped from then on."""
    params = make_params()
    opt = Adam(params[:1], lr=0.05)
    opt.add_param_group({"params": params[1], "betas": (0.5, 0.9)})
    assert opt.param_groups[1]["lr"] == 0.05 and opt.param_groups[1]["params"] == [params[1]]
    before = params[1].detach().numpy().copy()
    run(opt, params, 1)
    assert not np.allclose(before, params[1].detach().numpy())


def test_adagrad_state_exists_from_construction():
    """As in PyTorch, Adagrad creates each parameter's accumulator when it is added."""
    params = make_params()
    opt = Adagrad(params[:1], initial_accumulator_value=0.25)
    opt.add_param_group({"params": params[1:]})
    assert len(opt.state_dict()["state"]) == 2
    np.testing.assert_array_equal(opt.state[params[1]]["sum"].numpy(), np.full(3, 0.25))


def test_named_parameters_are_accepted():
    """(name, tensor) pairs, as model.named_parameters() yields, are accepted and the names
    kept in the group as "param_names", as in PyTorch."""
    params = make_params()
    opt = SGD([("w", params[0]), ("b", params[1])], lr=0.1)
    assert opt.param_groups[0]["params"] == params and opt.param_groups[0]["param_names"] == ["w", "b"]


@pytest.mark.gpu
@pytest.mark.parametrize("cls, hp", [c for c in CASES if len(c[1]) > 2], ids=[i for i, c in zip(IDS, CASES)
                                                                             if len(c[1]) > 2])
def test_cuda_trajectory_matches_cpu(cls, hp):
    """On a GPU (CuPy arrays) the same code follows the same trajectory as on the CPU."""
    params = [p.to("cuda").detach().requires_grad_() for p in make_params()]
    opt = cls(params, **hp)
    for step in run_reference(cls, hp, 5):
        for p, g in zip(params, grads([p.detach().cpu().numpy() for p in params])):
            p.grad = dtrain.tensor(g, device="cuda")
        opt.step()
        for p, e in zip(params, step):
            np.testing.assert_allclose(p.detach().cpu().numpy(), e, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW, RMSprop, Adagrad, Adadelta, Adamax, NAdam, RAdam, LBFGS])
def test_param_group_keys_equal_torchs(cls):
    """Each optimizer's groups hold exactly PyTorch's keys and default values, foreach /
    capturable / differentiable / fused included, so a state_dict has PyTorch's
    param_groups entries."""
    torch = pytest.importorskip("torch")
    ours = cls(make_params()).state_dict()["param_groups"][0]
    theirs = getattr(torch.optim, cls.__name__)([torch.zeros(1, requires_grad=True)]).state_dict()["param_groups"][0]
    assert ours == theirs | {"params": [0, 1]}


# the flags each PyTorch optimizer takes that only choose its kernels
KERNEL_FLAGS = {SGD: dict(foreach=True, fused=True), Adam: dict(foreach=True, capturable=True, fused=True),
                AdamW: dict(foreach=False, capturable=True, fused=True), RMSprop: dict(foreach=True, capturable=True),
                Adagrad: dict(foreach=True, fused=True), Adadelta: dict(foreach=True, capturable=True),
                Adamax: dict(foreach=True, capturable=True), NAdam: dict(foreach=True, capturable=True),
                RAdam: dict(foreach=True, capturable=True)}


@pytest.mark.parametrize("cls", KERNEL_FLAGS)
def test_kernel_flags_are_accepted_and_change_nothing(cls):
    """foreach / fused / capturable, as PyTorch programs pass them, are accepted, recorded
    in the groups, and leave the trajectory exactly as without them."""
    params, flagged = make_params(), make_params()
    opt = cls(flagged, lr=0.05, **KERNEL_FLAGS[cls])
    assert all(opt.param_groups[0][k] == v for k, v in KERNEL_FLAGS[cls].items())
    assert_same_trajectory(run(opt, flagged, 5), run(cls(params, lr=0.05), params, 5), rtol=0, atol=0)


@pytest.mark.parametrize("cls", KERNEL_FLAGS)
def test_differentiable_step_is_refused(cls):
    """differentiable=True (autograd through the step) is refused, naming the optimizer."""
    with pytest.raises(ValueError, match=f"{cls.__name__}: differentiable=True is not supported"):
        cls(make_params(), differentiable=True)


# ---- LBFGS: closures, against PyTorch -----------------------------------------------------

def rosenbrock(lib, params):
    x = params[0]
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def least_squares(lib, params):
    w, b = params
    return ((lib.tensor(X) @ w + b - lib.tensor(Y)) ** 2).sum() * (0.5 / len(X))


PROBLEMS = {"rosenbrock": (rosenbrock, [np.array([-1.2, 1.0, -1.2, 1.0])]),
            "rosenbrock-local": (rosenbrock, [np.array([-1.5, 2.0, 0.5, -0.3])]),
            "least_squares": (least_squares, INIT)}

# fixed-step L-BFGS on Rosenbrock with a long history amplifies last-bit differences (from
# BLAS summation order) step after step, so that case uses a short history
LBFGS_CASES = [
    ("rosenbrock", dict(max_iter=5, line_search_fn="strong_wolfe")),
    ("rosenbrock", dict(line_search_fn="strong_wolfe", history_size=2)),
    ("rosenbrock", dict(lr=0.5, max_iter=5, history_size=3)),
    ("rosenbrock-local", dict(max_iter=5)),
    ("rosenbrock-local", dict(max_iter=7, max_eval=8, line_search_fn="strong_wolfe")),
    ("least_squares", dict(max_iter=5)),
    ("least_squares", dict(max_iter=5, line_search_fn="strong_wolfe")),
    ("least_squares", dict(lr=0.5, max_iter=4, history_size=3)),
    ("least_squares", dict(tolerance_change=1e-3, tolerance_grad=1e-3)),
    ("least_squares", dict(line_search_fn="strong_wolfe", tolerance_change=1e-4)),
]


def run_lbfgs(lib, problem, steps, device="cpu", **hp):
    """Step an LBFGS of ``lib`` (dtrain or torch) ``steps`` times on ``problem``; the
    parameters after each step, the losses step() returned and the closure calls per step."""
    f, init = PROBLEMS[problem]
    params = [lib.tensor(a.copy(), device=device).requires_grad_() for a in init]
    opt = lib.optim.LBFGS(params, **hp)
    calls = [0]

    def closure():
        calls[0] += 1
        opt.zero_grad()
        loss = f(lib, params)
        loss.backward()
        return loss

    traj, losses, evals = [], [], []
    for _ in range(steps):
        losses.append(opt.step(closure).item())
        evals.append(calls[0])
        traj.append([p.detach().cpu().numpy().copy() for p in params])
    return traj, losses, evals, opt


@pytest.mark.parametrize("problem, hp", LBFGS_CASES, ids=[f"{p}-{hp}" for p, hp in LBFGS_CASES])
def test_lbfgs_matches_torch(problem, hp):
    """20 LBFGS steps follow PyTorch's: the same parameters after each step, the same losses
    returned, the closure evaluated the same number of times, the same final state."""
    torch = pytest.importorskip("torch")
    traj, losses, evals, opt = run_lbfgs(dtrain, problem, STEPS, **hp)
    ttraj, tlosses, tevals, topt = run_lbfgs(torch, problem, STEPS, **hp)
    assert_same_trajectory(traj, ttraj, atol=1e-8)
    np.testing.assert_allclose(losses, tlosses, rtol=1e-6, atol=1e-12)
    assert evals == tevals
    state, tstate = opt.state_dict()["state"][0], topt.state_dict()["state"][0]
    assert set(state) == set(tstate)
    assert (state["func_evals"], state["n_iter"]) == (tstate["func_evals"], tstate["n_iter"])
    assert len(state["old_dirs"]) == len(tstate["old_dirs"]) <= opt.param_groups[0]["history_size"]


@pytest.mark.gpu
@pytest.mark.parametrize("hp", [dict(max_iter=5), dict(max_iter=5, line_search_fn="strong_wolfe")])
def test_lbfgs_cuda_matches_cpu(hp):
    """On a GPU (CuPy arrays, 0-d results of dot products in the line search) LBFGS follows
    the CPU trajectory and evaluates the closure as often."""
    traj, losses, evals, _ = run_lbfgs(dtrain, "rosenbrock", 10, device="cuda", **hp)
    ctraj, closses, cevals, _ = run_lbfgs(dtrain, "rosenbrock", 10, **hp)
    assert_same_trajectory(traj, ctraj, atol=1e-8)
    assert evals == cevals


def test_lbfgs_converges_on_rosenbrock():
    """With the strong-Wolfe line search, LBFGS reaches Rosenbrock's minimum (1, ..., 1)."""
    traj, losses, _, _ = run_lbfgs(dtrain, "rosenbrock", 10, line_search_fn="strong_wolfe")
    np.testing.assert_allclose(traj[-1][0], np.ones(4), atol=1e-4)
    assert losses[0] > 100 and losses[-1] < 1e-8


def test_lbfgs_keeps_float32():
    """float32 parameters stay float32 through LBFGS steps, line search included."""
    params = [dtrain.tensor(a.astype(np.float32), requires_grad=True) for a in INIT]
    opt = LBFGS(params, max_iter=5, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = least_squares(dtrain, params)
        loss.backward()
        return loss

    first = opt.step(closure).item()
    assert opt.step(closure).item() < first
    assert all(p.dtype == dtrain.float32 for p in params)
    assert opt.state[params[0]]["d"].dtype == dtrain.float32


def test_lbfgs_stops_at_once_where_the_gradient_vanishes():
    """At a minimum (max |grad| <= tolerance_grad) step() evaluates the closure once,
    returns its loss and leaves the parameters alone."""
    x = dtrain.tensor(np.ones(4), requires_grad=True)
    opt = LBFGS([x])
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = rosenbrock(dtrain, [x])
        loss.backward()
        return loss

    assert opt.step(closure).item() == 0.0
    assert len(calls) == 1 and opt.state[x]["func_evals"] == 1
    np.testing.assert_array_equal(x.detach().numpy(), np.ones(4))


@pytest.mark.parametrize("hp", [dict(max_iter=3), dict(max_iter=3, line_search_fn="strong_wolfe")])
def test_lbfgs_state_dict_round_trip_continues(hp):
    """An LBFGS loaded from a state_dict after 3 steps (its history, direction, step length)
    continues exactly as the original."""
    f, _ = PROBLEMS["least_squares"]
    runs = []
    for resume in (False, True):
        params = make_params()
        opt = LBFGS(params, **hp)

        def closure():
            opt.zero_grad()
            loss = f(dtrain, params)
            loss.backward()
            return loss

        for _ in range(3):
            opt.step(closure)
        if resume:
            saved = opt.state_dict()
            params = [dtrain.tensor(p.detach().numpy().copy(), requires_grad=True) for p in params]
            opt = LBFGS(params)
            opt.load_state_dict(saved)
        for _ in range(3):
            opt.step(closure)
        runs.append([p.detach().numpy() for p in params])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make, error, match", [
    (lambda: LBFGS([_w()]).step(), TypeError, "LBFGS.step\\(\\) needs a closure"),
    (lambda: LBFGS([{"params": [_w()]}, {"params": [_w()]}]), ValueError,
     "LBFGS doesn't support per-parameter options \\(parameter groups\\): got 2 groups"),
    (lambda: LBFGS([_w()], lr=-1), ValueError, "Invalid learning rate: -1"),
    (lambda: LBFGS([_w()], line_search_fn="armijo"), ValueError, "line_search_fn 'armijo' is unknown"),
    (lambda: LBFGS([_w()], max_iter=0), ValueError, "max_iter must be a positive integer, but got 0"),
    (lambda: LBFGS([_w()], history_size=2.5), ValueError, "history_size must be a positive integer, but got 2.5"),
])
def test_lbfgs_bad_input_is_refused(make, error, match):
    """A missing closure, several groups and bad LBFGS settings raise a clear error."""
    with pytest.raises(error, match=match):
        make()


def test_lbfgs_refuses_a_group_added_later():
    """A second group added after construction is refused at step(), naming the count."""
    opt = LBFGS([_w()])
    opt.add_param_group({"params": [_w()]})
    with pytest.raises(ValueError, match="has 2 groups"):
        opt.step(lambda: 0.0)


# ---- errors --------------------------------------------------------------------------------

def _w():
    return dtrain.tensor(np.ones(3), requires_grad=True)


@pytest.mark.parametrize("make, error, match", [
    (lambda: SGD([_w()], lr=-1), ValueError, "Invalid learning rate: -1"),
    (lambda: SGD([_w()], momentum=-0.5), ValueError, "Invalid momentum value: -0.5"),
    (lambda: SGD([_w()], weight_decay=-1), ValueError, "Invalid weight_decay value: -1"),
    (lambda: SGD([_w()], nesterov=True), ValueError, "Nesterov momentum requires a momentum and zero dampening"),
    (lambda: SGD([_w()], momentum=0.9, dampening=0.1, nesterov=True), ValueError, "dampening=0.1"),
    (lambda: SGD([{"params": [_w()], "lr": -2}], lr=0.1), ValueError, "Invalid learning rate: -2"),
    (lambda: Adam([_w()], betas=(1.5, 0.999)), ValueError, "Invalid beta parameter at index 0: 1.5"),
    (lambda: Adam([_w()], betas=(0.9, 1.0)), ValueError, "Invalid beta parameter at index 1: 1.0"),
    (lambda: Adam([_w()], eps=-1e-8), ValueError, "Invalid epsilon value: -1e-08"),
    (lambda: AdamW([_w()], lr=-0.1), ValueError, "Invalid learning rate: -0.1"),
    (lambda: AdamW([_w()], weight_decay=-0.1), ValueError, "Invalid weight_decay value: -0.1"),
    (lambda: RMSprop([_w()], alpha=-0.1), ValueError, "Invalid alpha value: -0.1"),
    (lambda: RMSprop([_w()], momentum=-1), ValueError, "Invalid momentum value: -1"),
    (lambda: Adagrad([_w()], lr_decay=-1), ValueError, "Invalid lr_decay value: -1"),
    (lambda: Adagrad([_w()], initial_accumulator_value=-1), ValueError,
     "Invalid initial_accumulator_value value: -1"),
    (lambda: Adagrad([_w()], eps=-1), ValueError, "Invalid epsilon value: -1"),
    (lambda: Adadelta([_w()], lr=-1), ValueError, "Invalid learning rate: -1"),
    (lambda: Adadelta([_w()], rho=1.5), ValueError, "Invalid rho value: 1.5"),
    (lambda: Adadelta([_w()], rho=-0.1), ValueError, "Invalid rho value: -0.1"),
    (lambda: Adadelta([_w()], eps=-1e-6), ValueError, "Invalid epsilon value: -1e-06"),
    (lambda: Adadelta([_w()], weight_decay=-1), ValueError, "Invalid weight_decay value: -1"),
    (lambda: Adadelta([_w()], differentiable=True), ValueError, "Adadelta: differentiable=True is not supported"),
    (lambda: Adamax([_w()], lr=-0.1), ValueError, "Invalid learning rate: -0.1"),
    (lambda: Adamax([_w()], betas=(0.9, 1.0)), ValueError, "Invalid beta parameter at index 1: 1.0"),
    (lambda: Adamax([_w()], eps=-1), ValueError, "Invalid epsilon value: -1"),
    (lambda: NAdam([_w()], momentum_decay=-1), ValueError, "Invalid momentum_decay value: -1"),
    (lambda: NAdam([_w()], betas=(-0.1, 0.9)), ValueError, "Invalid beta parameter at index 0: -0.1"),
    (lambda: NAdam([_w()], weight_decay=-1), ValueError, "Invalid weight_decay value: -1"),
    (lambda: RAdam([_w()], lr=-1), ValueError, "Invalid learning rate: -1"),
    (lambda: RAdam([_w()], betas=(0.9,)), ValueError, r"betas must be a pair \(beta1, beta2\), but got \(0.9,\)"),
    (lambda: RAdam([_w()], differentiable=True), ValueError, "RAdam: differentiable=True is not supported"),
    (lambda: SGD([], lr=0.1), ValueError, "optimizer got an empty parameter list"),
    (lambda: SGD([_w() * 2], lr=0.1), ValueError, "can't optimize a non-leaf Tensor"),
    (lambda: SGD([w := _w(), w], lr=0.1), ValueError, "same parameter twice"),
    (lambda: SGD([{"params": [w := _w()]}, {"params": [w]}], lr=0.1), ValueError,
     "more than one parameter group"),
    (lambda: SGD(_w(), lr=0.1), TypeError, "iterable of Tensors or dicts"),
    (lambda: SGD([np.ones(3)], lr=0.1), TypeError, "can only optimize Tensors, but param 0 is a ndarray"),
    (lambda: SGD({_w()}, lr=0.1), TypeError, "ordered collections"),
    (lambda: SGD([_w()], lr=0.1).add_param_group([_w()]), TypeError, "param_group must be a dict"),
])
def test_bad_input_is_refused(make, error, match):
    """Bad hyperparameters and parameter lists raise a clear error quoting the bad value."""
    with pytest.raises(error, match=match):
        make()


def test_base_step_is_abstract():
    """Optimizer itself has no update rule: step() raises NotImplementedError."""
    with pytest.raises(NotImplementedError):
        Optimizer([_w()], {"lr": 0.1}).step()


def test_state_dict_of_a_model_with_other_shapes_is_refused_at_load():
    """An optimizer state_dict saved for other shapes: a ValueError at load naming the
    parameter, the state entry and both shapes, not a NumPy error in step()."""
    for make in (lambda ps: dtrain.optim.Adam(ps, lr=0.1), lambda ps: dtrain.optim.SGD(ps, lr=0.1, momentum=0.9)):
        small, big = dtrain.nn.Linear(3, 2), dtrain.nn.Linear(4, 2)
        saved = make(small.parameters())
        small(dtrain.randn(5, 3)).sum().backward()
        saved.step()
        opt = make(big.parameters())
        with pytest.raises(ValueError, match=r"for parameter 0 has shape \(2, 3\), but that parameter has shape "
                                             r"\(2, 4\)"):
            opt.load_state_dict(saved.state_dict())
        assert len(opt.state) == 0  # nothing half-loaded
