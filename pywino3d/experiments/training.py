"""Training, evaluation, pruning with fine-tuning and timing for the experiments.

Evaluation is always in ``model.eval()`` with BatchNorm statistics
recalibrated on training clips (:func:`recalibrate_bn`), so a clip's
prediction does not depend on the other clips of its batch.
"""
from __future__ import annotations

import time

import numpy as np

from .models import conv_layers


def train(model, data, *, epochs, lr=3e-3, batch=32, seed=0, schedule="cosine", on_step=None, progress=None):
    """Adam on cross-entropy, ``epochs`` passes in a seeded order.

    Parameters
    ----------
    schedule : {"cosine", "constant"}
        "cosine" anneals the learning rate from ``lr`` to 0 over the run.
    on_step : callable(step), optional
        Called after every optimiser step (used by pruning).
    progress : object with ``update(n)``, optional
        A :class:`tqdm.tqdm`; advances one per step.

    Examples
    --------
    >>> from pywino3d.experiments.data import moving_digits
    >>> from pywino3d.experiments.models import make_model
    >>> from pywino3d.experiments.training import train
    >>> model = train(make_model("spatial"), moving_digits(32), epochs=1)
    >>> model.training
    True
    """
    import torch

    x, y = data[0], data[1]
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    steps_per_epoch = len(xt) // batch
    if steps_per_epoch < 1:
        raise ValueError(f"data: {len(xt)} clips do not fill one batch of {batch}")
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    if schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch))
    elif schedule == "constant":
        sched = None
    else:
        raise ValueError(f"schedule: expected 'cosine' or 'constant', got {schedule!r}")
    g = torch.Generator().manual_seed(seed)
    model.train()
    step = 0
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, steps_per_epoch * batch, batch):
            b = perm[i:i + batch]
            loss = torch.nn.functional.cross_entropy(model(xt[b]), yt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            step += 1
            if on_step is not None:
                on_step(step)
            if progress is not None:
                progress.update(1)
    return model


def _batches(x, batch):
    import torch

    for i in range(0, len(x), batch):
        yield torch.from_numpy(x[i:i + batch])


def recalibrate_bn(model, x, batch=100):
    """Set every BatchNorm's running statistics to those of the clips ``x``, then ``model.eval()``.

    One pass in training mode with cumulative averaging
    (:func:`torch.optim.swa_utils.update_bn`); afterwards a clip's output
    depends only on that clip.

    Examples
    --------
    >>> from pywino3d.experiments.data import moving_digits
    >>> from pywino3d.experiments.models import make_model
    >>> from pywino3d.experiments.training import recalibrate_bn
    >>> recalibrate_bn(make_model("vanilla"), moving_digits(16)[0]).training
    False
    """
    import torch
    from torch.optim.swa_utils import update_bn

    with torch.no_grad():
        update_bn(_batches(x, batch), model)
    return model.eval()


def predict(model, x, batch=200):
    """Logits of ``model`` in eval mode (no BatchNorm batch statistics), as a NumPy array.

    Examples
    --------
    >>> from pywino3d.experiments.data import moving_digits
    >>> from pywino3d.experiments.models import make_model
    >>> from pywino3d.experiments.training import predict
    >>> predict(make_model("spatial"), moving_digits(3)[0]).shape
    (3, 20)
    """
    import torch

    model.eval()
    with torch.no_grad():
        return np.concatenate([model(b).numpy() for b in _batches(x, batch)])


def accuracy(model, data, batch=200):
    """Fraction of clips classified correctly, in eval mode.

    Call :func:`recalibrate_bn` first so that BatchNorm uses training
    statistics.

    Examples
    --------
    >>> from pywino3d.experiments.data import moving_digits
    >>> from pywino3d.experiments.models import make_model
    >>> from pywino3d.experiments.training import accuracy
    >>> 0.0 <= accuracy(make_model("spatial"), moving_digits(8)) <= 1.0
    True
    """
    return float((predict(model, data[0], batch).argmax(1) == data[1]).mean())


def conv_inputs(model, x):
    """The inputs of each Winograd conv layer of ``model`` for the clips ``x`` (eval mode).

    Examples
    --------
    >>> from pywino3d.experiments.data import moving_digits
    >>> from pywino3d.experiments.models import make_model
    >>> from pywino3d.experiments.training import conv_inputs
    >>> [tuple(t.shape) for t in conv_inputs(make_model("vanilla"), moving_digits(2)[0])][:2]
    [(2, 1, 8, 18, 18), (2, 8, 8, 18, 18)]
    """
    import torch

    inputs = []
    handles = [m.register_forward_hook(lambda m, i, o: inputs.append(i[0].detach())) for m in conv_layers(model)]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.from_numpy(x))
    finally:
        for h in handles:
            h.remove()
    return inputs


def interleaved_times(fns, *, rounds=10, seed=0, warmup=1):
    """Time several callables in interleaved rounds: each round calls each once, in a fresh shuffled order.

    Slow phases of a busy machine then hit all of them alike; compare them by
    the per-round ratios.

    Parameters
    ----------
    fns : dict name -> callable()
    rounds : int
    warmup : int
        Untimed calls of each callable first (plans, page faults).

    Returns
    -------
    dict name -> list of ``rounds`` times in seconds.

    Examples
    --------
    >>> from pywino3d.experiments.training import interleaved_times
    >>> t = interleaved_times({"a": lambda: None, "b": lambda: None}, rounds=3)
    >>> len(t["a"]), len(t["b"])
    (3, 3)
    """
    if rounds < 1:
        raise ValueError(f"rounds: expected >= 1, got {rounds}")
    names = list(fns)
    times = {n: [] for n in names}
    rng = np.random.default_rng(seed)
    for n in names:
        for _ in range(warmup):
            fns[n]()
    for _ in range(rounds):
        for k in rng.permutation(len(names)):
            n = names[k]
            t0 = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t0)
    return times


def interleaved_forward_times(models, x, *, rounds=10, seed=0):
    """Time whole forward passes of several models (eval mode, no gradients) on the batch ``x``, interleaved.

    Examples
    --------
    >>> from pywino3d.experiments.data import moving_digits
    >>> from pywino3d.experiments.models import make_model
    >>> from pywino3d.experiments.training import interleaved_forward_times
    >>> len(interleaved_forward_times({"a": make_model("vanilla")}, moving_digits(2)[0], rounds=2)["a"])
    2
    """
    import torch

    xt = torch.from_numpy(np.ascontiguousarray(x))
    for m in models.values():
        m.eval()

    def call(m):
        def f():
            with torch.no_grad():
                m(xt)
        return f

    return interleaved_times({n: call(m) for n, m in models.items()}, rounds=rounds, seed=seed)


def interleaved_conv_times(models, x, *, rounds=10, seed=0):
    """Time the Winograd conv layers of several models in interleaved rounds (see :func:`interleaved_times`).

    Parameters
    ----------
    models : dict name -> model
    x : ndarray, the clips of one inference batch

    Returns
    -------
    dict name -> list of ``rounds`` times in seconds.

    Examples
    --------
    >>> from pywino3d.experiments.data import moving_digits
    >>> from pywino3d.experiments.models import make_model
    >>> from pywino3d.experiments.training import interleaved_conv_times
    >>> t = interleaved_conv_times({"a": make_model("vanilla")}, moving_digits(2)[0], rounds=2)
    >>> len(t["a"])
    2
    """
    import torch

    inputs = {n: conv_inputs(models[n], x) for n in models}

    def call(n):
        def f():
            with torch.no_grad():
                for m, inp in zip(conv_layers(models[n]), inputs[n]):
                    m(inp)
        return f

    return interleaved_times({n: call(n) for n in models}, rounds=rounds, seed=seed)


def conv_time(model, x, repeat=5):
    """Median time of the Winograd conv layers of ``model`` on the clips ``x`` (one model alone).

    To compare models, prefer :func:`interleaved_conv_times`.

    Examples
    --------
    >>> from pywino3d.experiments.data import moving_digits
    >>> from pywino3d.experiments.models import make_model
    >>> from pywino3d.experiments.training import conv_time
    >>> conv_time(make_model("vanilla"), moving_digits(2)[0], repeat=1) > 0
    True
    """
    return float(np.median(interleaved_conv_times({"model": model}, x, rounds=repeat)["model"]))


PRUNE_METHODS = ("lowrank-column", "column", "unstructured", "dense")


def prune_finetune(model, method, density, data, *, epochs, lr=3e-3, batch=32, seed=0, progress=None):
    """Prune ``model`` to ``density`` while fine-tuning (cubic schedule), in place.

    method: "lowrank-column" (low-rank layers; column scores from the factors,
    l2; P and Q are fine-tuned), "column" (l2 of U's columns), "unstructured"
    (magnitude mask on the entries of U; columns stay, so no speed-up) or
    "dense" (the control: the same fine-tuning with nothing pruned).  The
    density falls from 1 to ``density`` over the first 70 % of the steps.

    Examples
    --------
    >>> from pywino3d.experiments.data import moving_digits
    >>> from pywino3d.experiments.models import conv_layers, make_model
    >>> from pywino3d.experiments.training import prune_finetune
    >>> model = prune_finetune(make_model("vanilla"), "column", 0.5, moving_digits(32), epochs=1)
    >>> [m.density for m in conv_layers(model)]
    [0.5, 0.5, 0.5, 0.5]
    """
    import torch

    from pywino3d.pruning import column_importance, cubic_density, magnitude_mask, select_columns

    if method not in PRUNE_METHODS:
        raise ValueError(f"method: expected one of {PRUNE_METHODS}, got {method!r}")
    layers = conv_layers(model)
    if method == "lowrank-column" and not all(hasattr(m, "P") for m in layers):
        raise ValueError("method: 'lowrank-column' needs a model of LowRankWinogradConv3d layers")
    if method == "unstructured" and not all(hasattr(m, "weight_U") for m in layers):
        raise ValueError("method: 'unstructured' needs a model of WinogradConv3d layers (see to_vanilla)")
    end = max(1, int(0.7 * epochs * (len(data[0]) // batch)))

    def apply(step):
        if method == "dense":
            return
        d = cubic_density(step, final_density=density, begin_step=0, end_step=end, frequency=5)
        for m in layers:
            if method == "unstructured":
                mask = torch.from_numpy(magnitude_mask(m.weight_U.detach().numpy(), d))
                with torch.no_grad():
                    m.weight_U.mul_(mask)
                continue
            if method == "lowrank-column":
                from pywino3d.lowrank import LowRankWinograd

                lr_w = LowRankWinograd(m.P.detach().numpy(), m.Q.detach().numpy(), kernel_size=m.kernel_size,
                                       tile=m.tile, U0=None if m.U0 is None else m.U0.numpy())
                scores = column_importance(lr_w, "l2")
            else:
                scores = column_importance(m.winograd_weights().detach().numpy(), "l2")
            scores[~m.columns_mask.numpy()] = -1.0  # pruned columns stay pruned
            m.set_columns(select_columns(scores, d))

    apply(0)
    train(model, data, epochs=epochs, lr=lr, batch=batch, seed=seed, on_step=apply, progress=progress)
    apply(10**9)
    return model
