"""Learning-rate schedulers: lr curves over 30 epochs against PyTorch's schedulers and
against each schedule's closed-form formula; momentum cycling; state_dict; errors."""
import math
import warnings
from bisect import bisect_right

import numpy as np
import pytest

import dtrain
from dtrain.optim import SGD, Adagrad, Adam
from dtrain.optim import lr_scheduler as sched

EPOCHS = 30
LRS = (0.1, 0.05)  # two parameter groups, so per-group handling is exercised


def make_opt(cls=SGD, **hp):
    groups = [{"params": [dtrain.tensor(np.ones(2), requires_grad=True)], "lr": lr} for lr in LRS]
    return cls(groups, **hp)


def make_torch_opt(name="SGD", **hp):
    torch = pytest.importorskip("torch")
    groups = [{"params": [torch.ones(2, requires_grad=True)], "lr": lr} for lr in LRS]
    return getattr(torch.optim, name)(groups, **hp)


def curve(opt, scheduler, epochs=EPOCHS, metrics=None):
    """The lrs after construction and after each epoch (optimizer.step(), then scheduler.step())."""
    lrs = [list(scheduler.get_last_lr())]
    for e in range(epochs):
        opt.step()
        scheduler.step() if metrics is None else scheduler.step(metrics[e])
        lrs.append(list(scheduler.get_last_lr()))
    return np.array(lrs)


def cos_anneal(start, end, pct):
    return end + (start - end) * (1 + math.cos(math.pi * pct)) / 2


def lin_anneal(start, end, pct):
    return start + (end - start) * pct


def piecewise(e, phases, anneal):
    """Interpolate along ``phases`` = [(end_step, start, end), ...], each phase starting
    where the previous one ended (the first at step 0); the last phase takes the rest."""
    start_step = 0.0
    for i, (end_step, a, b) in enumerate(phases):
        if e <= end_step or i == len(phases) - 1:
            return anneal(a, b, (e - start_step) / (end_step - start_step))
        start_step = end_step


def warm_restart_position(e, T_0, T_mult):
    """Where epoch ``e`` falls in its SGDR cycle, as a fraction of the cycle's length."""
    length = T_0
    while e >= length:
        e, length = e - length, length * T_mult
    return e / length


def cyclic(base, top, up, down, e, scale=1.0):
    """The triangle wave rising from ``base`` to ``top`` in ``up`` steps, falling in ``down``,
    its height times ``scale``."""
    pos = e % (up + down)
    height = pos / up if pos <= up else (up + down - pos) / down
    return base + (top - base) * height * scale


def one_cycle(max_lr, total, pct=0.3, anneal=cos_anneal, three_phase=False, div=25.0, final_div=1e4):
    init, low = max_lr / div, max_lr / div / final_div
    if three_phase:
        phases = [(pct * total - 1, init, max_lr), (2 * pct * total - 2, max_lr, init), (total - 1, init, low)]
    else:
        phases = [(pct * total - 1, init, max_lr), (total - 1, max_lr, low)]
    return lambda e: piecewise(e, phases, anneal)


# name: (build(module, optimizer), closed form f(epoch, base_lr, group index))
SCHEDULES = {
    "StepLR": (lambda m, o: m.StepLR(o, step_size=7, gamma=0.5),
               lambda e, lr, i: lr * 0.5 ** (e // 7)),
    "MultiStepLR": (lambda m, o: m.MultiStepLR(o, milestones=[3, 10, 10, 25], gamma=0.3),
                    lambda e, lr, i: lr * 0.3 ** bisect_right([3, 10, 10, 25], e)),
    "ExponentialLR": (lambda m, o: m.ExponentialLR(o, gamma=0.9),
                      lambda e, lr, i: lr * 0.9 ** e),
    "CosineAnnealingLR": (lambda m, o: m.CosineAnnealingLR(o, T_max=10, eta_min=0.001),
                          lambda e, lr, i: 0.001 + (lr - 0.001) * (1 + math.cos(math.pi * e / 10)) / 2),
    "CosineAnnealingLR-eta0": (lambda m, o: m.CosineAnnealingLR(o, T_max=12),
                               lambda e, lr, i: lr * (1 + math.cos(math.pi * e / 12)) / 2),
    "LambdaLR": (lambda m, o: m.LambdaLR(o, lambda e: 1 / (1 + e)),
                 lambda e, lr, i: lr / (1 + e)),
    "LambdaLR-per-group": (lambda m, o: m.LambdaLR(o, [lambda e: 0.9 ** e, lambda e: 1 + 0.1 * e]),
                           lambda e, lr, i: lr * (0.9 ** e if i == 0 else 1 + 0.1 * e)),
    "LinearLR-warmup": (lambda m, o: m.LinearLR(o, start_factor=0.25, total_iters=8),
                        lambda e, lr, i: lr * (0.25 + 0.75 * min(e, 8) / 8)),
    "LinearLR-decay": (lambda m, o: m.LinearLR(o, start_factor=1.0, end_factor=0.1, total_iters=20),
                       lambda e, lr, i: lr * (1.0 - 0.9 * min(e, 20) / 20)),
    "OneCycleLR-cos": (lambda m, o: m.OneCycleLR(o, max_lr=[1.0, 0.5], total_steps=EPOCHS),
                       lambda e, lr, i: one_cycle([1.0, 0.5][i], EPOCHS)(e)),
    "OneCycleLR-linear": (lambda m, o: m.OneCycleLR(o, max_lr=1.0, epochs=3, steps_per_epoch=10, pct_start=0.25,
                                                    anneal_strategy="linear"),
                          lambda e, lr, i: one_cycle(1.0, 30, 0.25, lin_anneal)(e)),
    "OneCycleLR-three-phase": (lambda m, o: m.OneCycleLR(o, max_lr=1.0, total_steps=EPOCHS, three_phase=True,
                                                         div_factor=10.0, final_div_factor=100.0),
                               lambda e, lr, i: one_cycle(1.0, EPOCHS, three_phase=True, div=10.0,
                                                          final_div=100.0)(e)),
    "SequentialLR-warmup-cosine": (
        lambda m, o: m.SequentialLR(o, [m.LinearLR(o, start_factor=0.1, total_iters=5),
                                        m.CosineAnnealingLR(o, T_max=25)], milestones=[5]),
        lambda e, lr, i: lr * (0.1 + 0.9 * e / 5) if e < 5 else lr * (1 + math.cos(math.pi * (e - 5) / 25)) / 2),
    "SequentialLR-three": (
        lambda m, o: m.SequentialLR(o, [m.LinearLR(o, start_factor=0.5, total_iters=4), m.ExponentialLR(o, 0.9),
                                        m.StepLR(o, step_size=5, gamma=0.5)], milestones=[4, 12]),
        lambda e, lr, i: (lr * (0.5 + 0.5 * e / 4) if e < 4 else lr * 0.9 ** (e - 4) if e < 12
                          else lr * 0.5 ** ((e - 12) // 5))),
    "MultiplicativeLR": (lambda m, o: m.MultiplicativeLR(o, lambda e: 0.95),
                         lambda e, lr, i: lr * 0.95 ** e),
    "MultiplicativeLR-per-group": (lambda m, o: m.MultiplicativeLR(o, [lambda e: 0.9, lambda e: 1 - 0.01 * e]),
                                   lambda e, lr, i: lr * (0.9 ** e if i == 0 else math.prod(1 - 0.01 * k
                                                                                           for k in range(1, e + 1)))),
    "ConstantLR": (lambda m, o: m.ConstantLR(o, factor=0.5, total_iters=4),
                   lambda e, lr, i: lr * (0.5 if e < 4 else 1.0)),
    "ConstantLR-default": (lambda m, o: m.ConstantLR(o),
                           lambda e, lr, i: lr * (1 / 3 if e < 5 else 1.0)),
    "PolynomialLR": (lambda m, o: m.PolynomialLR(o, total_iters=20, power=2.0),
                     lambda e, lr, i: lr * (1 - min(e, 20) / 20) ** 2),
    "PolynomialLR-default": (lambda m, o: m.PolynomialLR(o),
                             lambda e, lr, i: lr * (1 - min(e, 5) / 5)),
    "PolynomialLR-sqrt": (lambda m, o: m.PolynomialLR(o, total_iters=25, power=0.5),
                          lambda e, lr, i: lr * (1 - min(e, 25) / 25) ** 0.5),
    "CosineAnnealingWarmRestarts": (lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=7),
                                    lambda e, lr, i: cos_anneal(lr, 0.0, (e % 7) / 7)),
    "CosineAnnealingWarmRestarts-T_mult": (
        lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=0.001),
        lambda e, lr, i: cos_anneal(lr, 0.001, warm_restart_position(e, 3, 2))),
    "CyclicLR-triangular": (lambda m, o: m.CyclicLR(o, base_lr=[0.01, 0.005], max_lr=0.1, step_size_up=4,
                                                    step_size_down=3),
                            lambda e, lr, i: cyclic([0.01, 0.005][i], 0.1, 4, 3, e)),
    "CyclicLR-triangular2": (lambda m, o: m.CyclicLR(o, base_lr=0.01, max_lr=[0.1, 0.2], step_size_up=3,
                                                     mode="triangular2"),
                             lambda e, lr, i: cyclic(0.01, [0.1, 0.2][i], 3, 3, e, 0.5 ** (e // 6))),
    "CyclicLR-exp_range": (lambda m, o: m.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=2, step_size_down=5,
                                                   mode="exp_range", gamma=0.9),
                           lambda e, lr, i: cyclic(0.01, 0.1, 2, 5, e, 0.9 ** e)),
    "CyclicLR-scale_fn": (lambda m, o: m.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=5,
                                                  scale_fn=lambda c: 1 / c),
                          lambda e, lr, i: cyclic(0.01, 0.1, 5, 5, e, 1 / (e // 10 + 1))),
    "CyclicLR-scale_fn-iterations": (lambda m, o: m.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=5,
                                                             scale_fn=lambda k: 1 / (1 + k), scale_mode="iterations"),
                                     lambda e, lr, i: cyclic(0.01, 0.1, 5, 5, e, 1 / (1 + e))),
    "ChainedScheduler": (lambda m, o: m.ChainedScheduler([m.ConstantLR(o, factor=0.5, total_iters=4),
                                                          m.ExponentialLR(o, gamma=0.9)]),
                         lambda e, lr, i: lr * 0.9 ** e * (0.5 if e < 4 else 1.0)),
    "ChainedScheduler-optimizer": (lambda m, o: m.ChainedScheduler([m.StepLR(o, step_size=4, gamma=0.5),
                                                                    m.MultiplicativeLR(o, lambda e: 0.95)], o),
                                   lambda e, lr, i: lr * 0.5 ** (e // 4) * 0.95 ** e),
    "SequentialLR-warmup-restarts": (
        lambda m, o: m.SequentialLR(o, [m.LinearLR(o, start_factor=0.1, total_iters=4),
                                        m.CosineAnnealingWarmRestarts(o, T_0=6)], milestones=[4]),
        lambda e, lr, i: lr * (0.1 + 0.9 * e / 4) if e < 4 else cos_anneal(lr, 0.0, ((e - 4) % 6) / 6)),
}


@pytest.mark.parametrize("name", SCHEDULES)
def test_curve_matches_closed_form(name):
    """The lr of each group over 30 epochs follows the schedule's closed-form formula."""
    build, formula = SCHEDULES[name]
    opt = make_opt(momentum=0.9)
    lrs = curve(opt, build(sched, opt))
    expected = [[formula(e, lr, i) for i, lr in enumerate(LRS)] for e in range(EPOCHS + 1)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("name", SCHEDULES)
def test_curve_matches_torch(name):
    """The lr of each group over 30 epochs equals PyTorch's scheduler's."""
    torch = pytest.importorskip("torch")
    build, _ = SCHEDULES[name]
    opt, topt = make_opt(momentum=0.9), make_torch_opt(momentum=0.9)
    np.testing.assert_allclose(curve(opt, build(sched, opt)), curve(topt, build(torch.optim.lr_scheduler, topt)),
                               rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("cls, name, hp, key", [(SGD, "SGD", dict(momentum=0.9), "momentum"),
                                                (Adam, "Adam", {}, "betas")])
@pytest.mark.parametrize("three_phase", [False, True])
def test_one_cycle_cycles_momentum_like_torch(cls, name, hp, key, three_phase):
    """OneCycleLR moves SGD's momentum (or Adam's beta1) inversely to the lr, between
    max_momentum and base_momentum, as PyTorch does."""
    torch = pytest.importorskip("torch")
    runs = []
    for module, opt in ((sched, make_opt(cls, **hp)), (torch.optim.lr_scheduler, make_torch_opt(name, **hp))):
        s = module.OneCycleLR(opt, max_lr=1.0, total_steps=EPOCHS, three_phase=three_phase, base_momentum=0.8)
        momenta = []
        for _ in range(EPOCHS):
            momenta.append([g[key] if key == "momentum" else g[key][0] for g in opt.param_groups])
            opt.step()
            s.step()
        runs.append(momenta)
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-12)
    assert runs[0][0][0] == 0.95 and min(m[0] for m in runs[0]) == pytest.approx(0.8)


@pytest.mark.parametrize("cls, name, hp, key", [(SGD, "SGD", dict(momentum=0.9), "momentum"),
                                                (Adam, "Adam", {}, "betas")])
@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_cyclic_lr_cycles_momentum_like_torch(cls, name, hp, key, mode):
    """CyclicLR moves SGD's momentum (or Adam's beta1) against the lr, between max_momentum
    and base_momentum, scaled like the lr in each mode, as PyTorch does."""
    torch = pytest.importorskip("torch")
    runs = []
    for module, opt in ((sched, make_opt(cls, **hp)), (torch.optim.lr_scheduler, make_torch_opt(name, **hp))):
        s = module.CyclicLR(opt, base_lr=0.01, max_lr=0.1, step_size_up=3, step_size_down=4, mode=mode, gamma=0.95,
                            base_momentum=[0.7, 0.75], max_momentum=0.95)
        momenta = []
        for _ in range(EPOCHS):
            momenta.append([g[key] if key == "momentum" else g[key][0] for g in opt.param_groups])
            opt.step()
            s.step()
        runs.append(momenta)
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-12)
    lowest = 0.95 - 0.25 * (0.95 ** 3 if mode == "exp_range" else 1.0)  # at the first peak of the lr, step 3
    assert runs[0][0] == [0.95, 0.95] and min(m[0] for m in runs[0]) == pytest.approx(lowest)


def test_cyclic_lr_without_momentum_cycling_takes_any_optimizer():
    """With cycle_momentum=False, CyclicLR schedules an optimizer that has no momentum and
    leaves its groups' other settings alone."""
    opt = make_opt(Adagrad)
    s = sched.CyclicLR(opt, base_lr=0.01, max_lr=0.1, step_size_up=2, cycle_momentum=False)
    lrs = curve(opt, s, 4)[:, 0]
    np.testing.assert_allclose(lrs, [0.01, 0.055, 0.1, 0.055, 0.01])
    assert "momentum" not in opt.param_groups[0] and "max_momentum" not in opt.param_groups[0]


def test_cyclic_lr_state_dict_keeps_callable_objects_state():
    """CyclicLR saves the attributes of a callable-object scale_fn (not of a plain function)
    and restores them, as PyTorch does."""
    class Decay:
        def __init__(self, rate):
            self.rate = rate

        def __call__(self, cycle):
            return self.rate ** cycle

    s = sched.CyclicLR(make_opt(momentum=0.9), base_lr=0.01, max_lr=0.1, step_size_up=2, scale_fn=Decay(0.5))
    s._scale_fn_custom.rate = 0.25
    state = s.state_dict()
    assert state["_scale_fn_custom"] == {"rate": 0.25}
    s2 = sched.CyclicLR(make_opt(momentum=0.9), base_lr=0.01, max_lr=0.1, step_size_up=2, scale_fn=Decay(0.5))
    s2.load_state_dict(state)
    assert s2._scale_fn_custom.rate == 0.25 and s2.scale_fn(2) == 0.0625
    plain = sched.CyclicLR(make_opt(momentum=0.9), base_lr=0.01, max_lr=0.1, scale_fn=lambda c: 1.0)
    assert plain.state_dict()["_scale_fn_custom"] is None


@pytest.mark.parametrize("T_0, T_mult", [(3, 1), (3, 2), (2, 3)])
def test_warm_restarts_fractional_epochs_match_torch(T_0, T_mult):
    """CosineAnnealingWarmRestarts stepped with fractional epochs (epoch + i / iters, once a
    batch), then with jumps back and forth, sets PyTorch's lrs and last_epoch, without the
    epoch deprecation warning."""
    torch = pytest.importorskip("torch")
    epochs = [e + i / 4 for e in range(12) for i in range(4)] + [17.5, 2.25, 40.0, 0, 6.99]
    runs = []
    for module, opt in ((sched, make_opt()), (torch.optim.lr_scheduler, make_torch_opt())):
        s = module.CosineAnnealingWarmRestarts(opt, T_0=T_0, T_mult=T_mult, eta_min=0.002)
        lrs = []
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for epoch in epochs:
                opt.step()
                s.step(epoch)
                lrs.append([*s.get_last_lr(), s.last_epoch, s.T_i])
        runs.append(lrs)
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-12)


def test_warm_restarts_restart_at_the_minimum():
    """Each SGDR cycle ends at eta_min's side and restarts at the initial lr: with T_0=2,
    T_mult=2 the lr is back at the initial lr at epochs 0, 2, 6 and 14."""
    opt = make_opt()
    lrs = curve(opt, sched.CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=2, eta_min=0.01), 14)[:, 0]
    assert [e for e, lr in enumerate(lrs) if lr == LRS[0]] == [0, 2, 6, 14]
    assert lrs[1] == pytest.approx((LRS[0] + 0.01) / 2) and lrs[13] < lrs[5] < lrs[1]


def test_initial_lr_is_recorded_and_resuming_needs_it():
    """A scheduler records each group's "initial_lr" (a second one keeps the first's), and
    resuming with last_epoch >= 0 needs it: KeyError naming the group, as in PyTorch."""
    opt = make_opt()
    sched.StepLR(opt, step_size=3)
    opt.param_groups[0]["lr"] = 7.0
    sched.ExponentialLR(opt, gamma=0.5)
    assert [g["initial_lr"] for g in opt.param_groups] == list(LRS)
    with pytest.raises(KeyError, match=r"param_groups\[0\]"):
        sched.StepLR(make_opt(), step_size=3, last_epoch=4)


@pytest.mark.parametrize("name", ["StepLR", "CosineAnnealingLR", "LinearLR-decay", "OneCycleLR-cos", "ConstantLR",
                                  "PolynomialLR", "MultiplicativeLR", "CosineAnnealingWarmRestarts-T_mult",
                                  "CyclicLR-triangular2"])
def test_resume_with_last_epoch_matches_torch(name):
    """Built with last_epoch=9 over groups holding initial_lr, a scheduler continues as
    PyTorch's does."""
    torch = pytest.importorskip("torch")
    build, _ = SCHEDULES[name]
    curves = []
    for module, opt in ((sched, make_opt(momentum=0.9)), (torch.optim.lr_scheduler, make_torch_opt(momentum=0.9))):
        build(module, opt)  # records initial_lr (and OneCycleLR's bounds) in the groups
        for g in opt.param_groups:
            g["lr"] = g["initial_lr"] * 0.5
        resumed = build(with_last_epoch(module, 9), opt)
        curves.append(curve(opt, resumed, 15))
    np.testing.assert_allclose(curves[0], curves[1], rtol=1e-12)


def with_last_epoch(module, last_epoch):
    """``module`` whose scheduler classes are called with ``last_epoch`` added."""
    class Resumed:
        def __getattr__(self, name):
            return lambda *args, **kwargs: getattr(module, name)(*args, last_epoch=last_epoch, **kwargs)
    return Resumed()


@pytest.mark.parametrize("name", SCHEDULES)
def test_state_dict_round_trip_continues_curve(name):
    """A scheduler and optimizer rebuilt and loaded from their state_dicts after 10 epochs
    continue with the same lrs as the originals."""
    build, _ = SCHEDULES[name]
    opt = make_opt(momentum=0.9)
    s = build(sched, opt)
    curve(opt, s, 10)
    opt2 = make_opt(momentum=0.9)
    s2 = build(sched, opt2)
    opt2.load_state_dict(opt.state_dict())
    s2.load_state_dict(s.state_dict())
    np.testing.assert_array_equal(curve(opt2, s2, 20), curve(opt, s, 20))


def test_lambda_lr_state_dict_keeps_callable_objects_state():
    """LambdaLR saves the attributes of callable-object lambdas (not plain functions) and
    restores them, as PyTorch does."""
    class Warmup:
        def __init__(self, k):
            self.k = k

        def __call__(self, epoch):
            return min(1.0, (epoch + 1) / self.k)

    s = sched.LambdaLR(make_opt(), [Warmup(3), lambda e: 1.0])
    s.lr_lambdas[0].k = 5
    state = s.state_dict()
    assert state["lr_lambdas"] == [{"k": 5}, None]
    s2 = sched.LambdaLR(make_opt(), [Warmup(3), lambda e: 1.0])
    s2.load_state_dict(state)
    assert s2.lr_lambdas[0].k == 5


# ---- ReduceLROnPlateau ---------------------------------------------------------------------

# a constant metric never improves after the first epoch; with patience 2 the lr is cut
# after every 3 bad epochs, later ones wait out the cooldown, and min_lr floors it
@pytest.mark.parametrize("kwargs, expected", [
    (dict(patience=2), [1, 1, 1, .5, .5, .5, .25, .25, .25, .125]),
    (dict(patience=2, cooldown=2), [1, 1, 1, .5, .5, .5, .5, .5, .25, .25]),
    (dict(patience=0, min_lr=0.3), [1, .5, .3, .3, .3, .3, .3, .3, .3, .3]),
    (dict(patience=0, eps=0.3), [1, .5, .5, .5, .5, .5, .5, .5, .5, .5]),
])
def test_plateau_constant_metric(kwargs, expected):
    """On a flat metric, the lr is multiplied by factor once patience is exceeded, waits
    out the cooldown, never goes below min_lr, and skips cuts smaller than eps."""
    opt = SGD([dtrain.tensor(np.ones(2), requires_grad=True)], lr=1.0)
    s = sched.ReduceLROnPlateau(opt, factor=0.5, **kwargs)
    np.testing.assert_allclose(curve(opt, s, 10, [3.0] * 10)[1:, 0], expected)


@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("threshold_mode", ["rel", "abs"])
def test_plateau_matches_torch(mode, threshold_mode):
    """On a noisy, slowly improving metric, the lrs follow PyTorch's ReduceLROnPlateau for
    each mode and threshold mode, with patience, cooldown and per-group min_lr."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    metric = 10 - np.log1p(np.arange(EPOCHS)) + rng.standard_normal(EPOCHS) * 0.3
    metric = list(metric if mode == "max" else -metric)
    kwargs = dict(mode=mode, factor=0.5, patience=2, threshold=0.05, threshold_mode=threshold_mode, cooldown=1,
                  min_lr=[0.01, 0.02])
    opt, topt = make_opt(), make_torch_opt()
    ours = curve(opt, sched.ReduceLROnPlateau(opt, **kwargs), EPOCHS, metric)
    theirs = curve(topt, torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kwargs), EPOCHS, metric)
    np.testing.assert_array_equal(ours, theirs)
    assert ours[-1, 0] < LRS[0]


def test_plateau_accepts_tensor_metric_and_round_trips():
    """step() takes a one-element Tensor; a plateau scheduler loaded from state_dict
    continues identically."""
    opt = make_opt()
    s = sched.ReduceLROnPlateau(opt, patience=1)
    for m in (3.0, 2.0, 2.0):
        s.step(dtrain.tensor(m))
    s2 = sched.ReduceLROnPlateau(make_opt(), patience=1)
    s2.load_state_dict(s.state_dict())
    for m in (2.0, 2.0, 1.0):
        s.step(m)
        s2.step(m)
    assert s2.get_last_lr() == s.get_last_lr() and s2.best == 1.0 and s2.last_epoch == 6


# ---- warnings and errors -------------------------------------------------------------------

def test_warns_when_scheduler_steps_before_optimizer():
    """Stepping the scheduler before the optimizer has stepped warns, as in PyTorch; the
    right order does not."""
    opt = make_opt()
    s = sched.StepLR(opt, step_size=2)
    with pytest.warns(UserWarning, match="before `optimizer.step\\(\\)`"):
        s.step()
    opt = make_opt()
    s = sched.StepLR(opt, step_size=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()
        s.step()


@pytest.mark.parametrize("make, error, match", [
    (lambda o: sched.StepLR(object(), step_size=3), TypeError, "object is not an Optimizer"),
    (lambda o: sched.StepLR(o, step_size=0), ValueError, "step_size must be a positive integer, but got 0"),
    (lambda o: sched.CosineAnnealingLR(o, T_max=0), ValueError, "T_max must be positive, but got 0"),
    (lambda o: sched.LinearLR(o, start_factor=0), ValueError, "start_factor=0"),
    (lambda o: sched.LinearLR(o, start_factor=1.5), ValueError, "start_factor=1.5"),
    (lambda o: sched.LinearLR(o, end_factor=1.5), ValueError, "end_factor=1.5"),
    (lambda o: sched.LambdaLR(o, [lambda e: 1.0]), ValueError, "Expected 2 lr_lambdas .* but got 1"),
    (lambda o: sched.LambdaLR(o, 0.5), TypeError, "lr_lambda should be a function, but got float"),
    (lambda o: sched.OneCycleLR(o, max_lr=1.0), ValueError, "either total_steps OR"),
    (lambda o: sched.OneCycleLR(o, max_lr=1.0, total_steps=0), ValueError, "positive integer total_steps, but got 0"),
    (lambda o: sched.OneCycleLR(o, max_lr=1.0, epochs=0, steps_per_epoch=3), ValueError, "epochs, but got 0"),
    (lambda o: sched.OneCycleLR(o, max_lr=1.0, total_steps=9, pct_start=1.5), ValueError, "pct_start, but got 1.5"),
    (lambda o: sched.OneCycleLR(o, max_lr=1.0, total_steps=9, anneal_strategy="exp"), ValueError, "'exp'"),
    (lambda o: sched.OneCycleLR(o, max_lr=[1.0], total_steps=9), ValueError, "max_lr has 1 values, param_groups has 2"),
    (lambda o: sched.OneCycleLR(Adagrad(o.param_groups[0]["params"]), max_lr=1.0, total_steps=9), ValueError,
     "momentum or beta1"),
    (lambda o: sched.SequentialLR(o, [], milestones=[]), ValueError, "at least one scheduler"),
    (lambda o: sched.SequentialLR(o, [sched.StepLR(o, 2), sched.StepLR(o, 3)], milestones=[2, 4]), ValueError,
     "2 schedulers and 2 milestones"),
    (lambda o: sched.SequentialLR(o, [sched.StepLR(make_opt(), 2)], milestones=[]), ValueError,
     "same optimizer"),
    (lambda o: sched.SequentialLR(o, [sched.ReduceLROnPlateau(o)], milestones=[]), ValueError,
     "ReduceLROnPlateau"),
    (lambda o: sched.ReduceLROnPlateau(o, factor=1.0), ValueError, "Factor should be < 1.0, but got factor=1.0"),
    (lambda o: sched.ReduceLROnPlateau(o, mode="avg"), ValueError, "mode 'avg' is unknown"),
    (lambda o: sched.ReduceLROnPlateau(o, threshold_mode="pct"), ValueError, "threshold mode 'pct' is unknown"),
    (lambda o: sched.ReduceLROnPlateau(o, min_lr=[0.1]), ValueError, "expected 2 min_lrs .* got 1"),
    (lambda o: sched.MultiplicativeLR(o, [lambda e: 1.0] * 3), ValueError, "Expected 2 lr_lambdas .* but got 3"),
    (lambda o: sched.MultiplicativeLR(o, "0.9"), TypeError, "lr_lambda should be a function, but got str"),
    (lambda o: sched.ConstantLR(o, factor=1.5), ValueError, "between 0 and 1, but got factor=1.5"),
    (lambda o: sched.ConstantLR(o, factor=-0.5), ValueError, "between 0 and 1, but got factor=-0.5"),
    (lambda o: sched.CosineAnnealingWarmRestarts(o, T_0=0), ValueError, "positive integer T_0, but got 0"),
    (lambda o: sched.CosineAnnealingWarmRestarts(o, T_0=2.5), ValueError, "positive integer T_0, but got 2.5"),
    (lambda o: sched.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=0), ValueError,
     "integer T_mult >= 1, but got 0"),
    (lambda o: sched.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=1.5), ValueError,
     "integer T_mult >= 1, but got 1.5"),
    (lambda o: sched.CosineAnnealingWarmRestarts(o, T_0=5, eta_min="0"), ValueError,
     "float or int eta_min, but got 0 of type str"),
    (lambda o: sched.CosineAnnealingWarmRestarts(o, T_0=5).step(-1), ValueError,
     "non-negative epoch, but got -1"),
    (lambda o: sched.CyclicLR(o, 0.01, 0.1, mode="cosine"), ValueError, "mode is invalid and scale_fn is None: mode "
     "'cosine'"),
    (lambda o: sched.CyclicLR(o, 0.01, 0.1, scale_mode="epoch", scale_fn=lambda c: 1.0), ValueError,
     "scale_mode 'epoch' is unknown"),
    (lambda o: sched.CyclicLR(o, 0.01, 0.1, step_size_up=0), ValueError, "step_size_up must be positive, but got 0"),
    (lambda o: sched.CyclicLR(o, 0.01, 0.1, step_size_down=-2), ValueError,
     "step_size_down must be positive, but got -2"),
    (lambda o: sched.CyclicLR(o, [0.01] * 3, 0.1), ValueError, "base_lr has 3 values, param_groups has 2"),
    (lambda o: sched.CyclicLR(o, 0.01, 0.1, max_momentum=[0.9]), ValueError,
     "max_momentum has 1 values, param_groups has 2"),
    (lambda o: sched.CyclicLR(Adagrad(o.param_groups[0]["params"]), 0.01, 0.1), ValueError,
     "optimizer must support momentum or beta1 with `cycle_momentum` option enabled, and Adagrad has neither"),
    (lambda o: sched.CyclicLR(object(), 0.01, 0.1), TypeError, "object is not an Optimizer"),
    (lambda o: sched.ChainedScheduler([]), ValueError, "at least one scheduler"),
    (lambda o: sched.ChainedScheduler([sched.StepLR(o, 2), sched.StepLR(make_opt(), 2)]), ValueError,
     "same optimizer, but the StepLR at index 1"),
    (lambda o: sched.ChainedScheduler([sched.StepLR(o, 2)], optimizer=make_opt()), ValueError,
     "same optimizer, but the StepLR at index 0"),
    (lambda o: sched.ChainedScheduler([sched.StepLR(o, 2), sched.ReduceLROnPlateau(o)]), ValueError,
     "ReduceLROnPlateau \\(at index 1\\)"),
    (lambda o: sched.ChainedScheduler([sched.StepLR(o, 2), 0.5]), TypeError,
     "at index 1 should have `optimizer` as its attribute, but got a float"),
])
def test_bad_input_is_refused(make, error, match):
    """Bad scheduler arguments raise a clear error quoting the bad value."""
    with pytest.raises(error, match=match):
        make(make_opt())


def test_one_cycle_refuses_stepping_past_total_steps():
    """OneCycleLR raises, naming both counts, when stepped more than total_steps times."""
    opt = make_opt(momentum=0.9)
    s = sched.OneCycleLR(opt, max_lr=1.0, total_steps=5)
    for _ in range(5):
        opt.step()
        s.step()
    with pytest.raises(ValueError, match="Tried to step 6 times. The specified number of total steps is 5"):
        s.step()
