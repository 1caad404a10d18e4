"""Training, evaluation, pruning with fine-tuning and timing for the experiments."""
from __future__ import annotations

import time

import numpy as np

from .models import conv_layers


def train(model, data, *, epochs, lr=3e-3, batch=32, seed=0, on_step=None, progress=None):
    """Adam on cross-entropy, ``epochs`` passes in a seeded order.

    ``progress`` is anything with ``update(n)`` (a :class:`tqdm.tqdm`); it
    advances one step per batch.

    Examples
    --------
    >>> from pywino3d.experiments.data import moving_digits
    >>> from pywino3d.experiments.models import make_model
    >>> from pywino3d.experiments.training import train
    >>> model = train(make_model("spatial"), moving_digits(32), epochs=1)
    """
    import torch

    x, y = data
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    g = torch.Generator().manual_seed(seed)
    step = 0
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt) - batch + 1, batch):
            b = perm[i:i + batch]
            loss = torch.nn.functional.cross_entropy(model(xt[b]), yt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if on_step is not None:
                on_step(step)
            if progress is not None:
                progress.update(1)
    return model


def accuracy(model, data, batch=200):
    """Fraction of clips classified correctly.

    Examples
    --------
    >>> from pywino3d.experiments.data import moving_digits
    >>> from pywino3d.experiments.models import make_model
    >>> from pywino3d.experiments.training import accuracy
    >>> 0.0 <= accuracy(make_model("spatial"), moving_digits(8)) <= 1.0
    True
    """
    import torch

    x, y = data
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += int((model(torch.from_numpy(x[i:i + batch])).argmax(1).numpy() == y[i:i + batch]).sum())
    return correct / len(x)


def conv_time(model, x, repeat=5):
    """Median time of all Winograd conv layers of one inference batch.

    Examples
    --------
    >>> from pywino3d.experiments.data import moving_digits
    >>> from pywino3d.experiments.models import make_model
    >>> from pywino3d.experiments.training import conv_time
    >>> conv_time(make_model("vanilla"), moving_digits(2)[0], repeat=1) > 0
    True
    """
    import torch

    layers = conv_layers(model)
    inputs = []
    hook_handles = [m.register_forward_hook(lambda m, i, o: inputs.append(i[0].detach()))
                    for m in layers]
    with torch.no_grad():
        model(torch.from_numpy(x))
    for h in hook_handles:
        h.remove()
    ts = []
    with torch.no_grad():
        for _ in range(repeat + 1):
            t0 = time.perf_counter()
            for m, inp in zip(layers, inputs):
                m(inp)
            ts.append(time.perf_counter() - t0)
    return float(np.median(ts[1:]))


def prune_finetune(model, method, density, data, *, epochs, seed=0, progress=None):
    """Prune ``model`` to ``density`` while fine-tuning (cubic schedule).

    method: "lowrank-column" (column scores from the factors, l2),
    "column" (l2 of the full U's columns) or "unstructured" (magnitude mask on
    the entries of U; columns stay, so no speed-up).

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

    from ..pruning import column_importance, cubic_density, magnitude_mask, select_columns

    layers = conv_layers(model)
    steps_per_epoch = len(data[0]) // 32
    end = max(1, int(0.7 * epochs * steps_per_epoch))
    masks = {}

    def apply(step):
        d = cubic_density(step, final_density=density, begin_step=0, end_step=end, frequency=5)
        for m in layers:
            if method == "unstructured":
                U = m.winograd_weights().detach().numpy()
                mask = torch.from_numpy(magnitude_mask(U, d))
                masks[m] = mask
                with torch.no_grad():
                    m.weight_U.mul_(mask)
            else:
                if method == "lowrank-column":
                    from ..lowrank import LowRankWinograd

                    lr = LowRankWinograd(m.P.detach().numpy(), m.Q.detach().numpy(),
                                         kernel_size=m.kernel_size, tile=m.tile,
                                         U0=None if m.U0 is None else m.U0.numpy())
                    scores = column_importance(lr, "l2")
                else:
                    scores = column_importance(m.winograd_weights().detach().numpy(), "l2")
                scores[~m.columns_mask.numpy()] = -1.0  # pruned columns stay pruned
                m.set_columns(select_columns(scores, d))

    apply(0)
    train(model, data, epochs=epochs, seed=seed, on_step=apply, progress=progress)
    apply(10**9)
    return model
