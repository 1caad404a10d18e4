"""One-shot column pruning of converted PyTorch networks (:func:`prune_model`).

Kept apart from :mod:`pywino3d.torch` (which re-exports :func:`prune_model`)
so that the layers and the pruning policy can change independently.  The
maths -- importance scores, column choice, least-squares refit -- is that of
:mod:`pywino3d.pruning`; this module only moves weights between the layers
and NumPy.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from pywino3d.lowrank import LowRankWinograd
from pywino3d._core import calibration as _calibration
from pywino3d.torch.winograd import LowRankWinogradConv3d, WinogradConv3d
from pywino3d.pruning import (
    PRUNE_METHODS,
    _check_density,
    _check_structure,
    _dense,
    _prune_scores,
    _prune_to,
    select_columns_global,
)

__all__ = ["prune_model"]

SCOPES = ("global", "layer")


def _winograd_layers(model):
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, (WinogradConv3d, LowRankWinogradConv3d))]


def _as_numpy(t):
    return None if t is None else t.detach().cpu().numpy().astype(np.float64)


def _layer_weights(layer):
    """The layer's weights as U (array) or LowRankWinograd, float64 on the host,
    zero at positions the layer has already pruned."""
    mask = layer.columns_mask.detach().cpu().numpy()
    if hasattr(layer, "weight_U"):
        U = _as_numpy(layer.weight_U)
        U[~mask] = 0.0
        return U
    P = _as_numpy(layer.P)
    P[~mask] = 0.0
    U0 = _as_numpy(layer.U0)
    if U0 is not None:
        U0[~mask] = 0.0
    return LowRankWinograd(P, _as_numpy(layer.Q), kernel_size=layer.kernel_size, tile=layer.tile, U0=U0)


def _store(layer, pruned, keep):
    def put(param, value):
        param.copy_(torch.from_numpy(np.ascontiguousarray(value)).to(dtype=param.dtype, device=param.device))

    with torch.no_grad():
        if hasattr(layer, "weight_U"):
            put(layer.weight_U, pruned)
        else:
            put(layer.P, pruned.P)
            put(layer.Q, pruned.Q)
            if layer.U0 is not None:
                put(layer.U0, pruned.U0)
    layer.set_columns(keep)


def _layer_inputs(model, layers, example_inputs):
    """Inputs (float64 NumPy) of the given layers for one forward pass in eval mode."""
    store = {}

    def hook(name):
        def f(module, args, output):
            store[name] = args[0].detach().cpu().numpy().astype(np.float64)
        return f

    handles = [layer.register_forward_hook(hook(name)) for name, layer in layers]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(*example_inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    missing = [name for name, _ in layers if name not in store]
    if missing:
        raise ValueError(f"example_inputs: the forward pass did not reach the layers {missing}")
    return [store[name] for name, _ in layers]


def prune_model(model, density, *, method="output", refit=True, scope="global", example_inputs=None,
                structure="free"):
    """One-shot column pruning of every Winograd layer of a converted network.

    Each :class:`WinogradConv3d` and :class:`LowRankWinogradConv3d` of
    ``model`` (e.g. after :func:`convert_model`) keeps a subset of its tile
    positions, chosen and re-fitted as by :func:`pywino3d.prune_columns`: the
    pruned layer's weights are zero at the pruned positions (low-rank layers:
    rows of ``P``, and of ``U0`` in residual mode; ``Q`` is unchanged) and its
    ``columns_mask`` buffer records the kept positions, so the kernels skip
    the pruned ones in forward and backward passes.  Positions a layer had
    already pruned count as zero weights.

    Parameters
    ----------
    model : torch.nn.Module
        Modified in place.
    density : float in (0, 1]
        Fraction of positions kept, per layer (``scope="layer"``) or over all
        Winograd layers together (``scope="global"``).
    method : {"output", "obs", "l2", "l1"}
        Column choice, as in :func:`pywino3d.prune_columns`.
    refit : bool
        Least-squares refit of the kept columns.
    example_inputs : tensor or tuple of tensors, optional
        A calibration batch for ``model`` (a few dozen training examples).
        The layers are then pruned one after another, in the order of
        ``named_modules``: each layer's inputs are recorded (eval mode) in the
        network as pruned so far and in the unpruned network, ``"output"``
        scores positions by the output error on those inputs, and the refit
        fits the pruned layer on the pruned network's inputs to the unpruned
        layer on the unpruned network's inputs, so that every layer also
        compensates the error of the layers before it
        (:func:`pywino3d.refit_columns` with ``reference_inputs``).  Without
        it, the white-noise criteria are used.  Low-rank layers accept it
        only with ``refit=False`` (the data-aware refit couples input
        channels, which the factors cannot express).
    scope : {"global", "layer"}
        ``"layer"``: every layer keeps ``ceil(density * positions)``.
        ``"global"``: the number each layer keeps comes from one threshold on
        the method's per-position scores, each layer's divided by their mean
        (:func:`pywino3d.select_columns_global`; for ``"obs"`` the score of
        removing one position with refit); then each layer chooses that many
        columns by ``method``.  Every layer keeps at least one.
    structure : {"free", "lines"}
        Where each layer's kept positions may lie, as in
        :func:`pywino3d.prune_columns`: ``"free"`` (default) by score alone,
        ``"lines"`` in the fewest transform lines (the transforms then shrink
        with the density too; not with ``method="obs"``).

    Returns
    -------
    model : the same module, pruned

    Examples
    --------
    >>> import torch
    >>> from pywino3d.torch import convert_model, prune_model
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.ReLU(),
    ...                           torch.nn.Conv3d(4, 4, 3, padding=1))
    >>> net = prune_model(convert_model(net, weights="winograd", tile=4), 0.5, scope="layer")
    >>> [round(m.density, 3) for m in (net[0], net[2])]
    [0.5, 0.5]
    >>> net(torch.randn(1, 2, 8, 8, 8)).shape
    torch.Size([1, 4, 8, 8, 8])
    """
    density = _check_density(density)
    if method not in PRUNE_METHODS:
        raise ValueError(f"method: expected one of {PRUNE_METHODS}, got {method!r}")
    if scope not in SCOPES:
        raise ValueError(f"scope: expected one of {SCOPES}, got {scope!r}")
    _check_structure(structure)
    if structure == "lines" and method == "obs":
        raise ValueError("structure: 'lines' ranks positions by a score; method 'obs' has none "
                         "(use 'output', 'l2' or 'l1')")
    layers = _winograd_layers(model)
    if not layers:
        raise ValueError("model: has no WinogradConv3d or LowRankWinogradConv3d layer "
                         "(convert it with pywino3d.torch.convert_model(model, weights='winograd') first)")
    weights = [_layer_weights(layer) for _, layer in layers]
    if example_inputs is not None:
        return _prune_model_data(model, layers, weights, density, method, refit, scope, example_inputs,
                                 structure)
    if scope == "layer":
        counts = [max(1, math.ceil(density * layer.positions - 1e-9)) for _, layer in layers]
    else:
        scores = [_prune_scores(W, method, layer.kernel_size, layer.tile) for W, (_, layer) in zip(weights, layers)]
        counts = [k.size for k in select_columns_global(scores, density)]
    for W, (_, layer), k in zip(weights, layers, counts):
        pruned, keep = _prune_to(W, k, layer.kernel_size, layer.tile, method, refit, structure=structure)
        _store(layer, pruned, keep)
    return model


def _prune_model_data(model, layers, weights, density, method, refit, scope, example_inputs, structure="free"):
    """Sequential data-aware pruning (see :func:`prune_model`, ``example_inputs``)."""
    if not isinstance(example_inputs, (tuple, list)):
        example_inputs = (example_inputs,)
    if method == "obs":
        raise ValueError("method: 'obs' uses the white-noise operator; with example_inputs use 'output'")
    if refit and any(isinstance(W, LowRankWinograd) for W in weights):
        raise ValueError("example_inputs: the data-aware refit cannot keep low-rank layers in factored form; "
                         "pass refit=False, or prune without example_inputs (white-noise refit)")
    reference = _layer_inputs(model, layers, example_inputs)

    def moments(i, seen=None):
        layer = layers[i][1]
        return _calibration.input_moments(reference[i] if seen is None else seen, kernel_size=layer.kernel_size,
                                          tile=layer.tile, padding=layer.padding,
                                          reference=None if seen is None else reference[i])

    if scope == "layer":
        counts = [max(1, math.ceil(density * layer.positions - 1e-9)) for _, layer in layers]
    else:  # allocate by the scores on the unpruned network's inputs
        scores = [_calibration.scores(_dense(W), moments(i)) if method == "output"
                  else _prune_scores(W, method, None, None) for i, W in enumerate(weights)]
        counts = [k.size for k in select_columns_global(scores, density)]
    for i, (W, (name, layer), k) in enumerate(zip(weights, layers, counts)):
        # this layer's inputs in the network pruned so far (the first layer's are the reference)
        mom = moments(i) if i == 0 else moments(i, _layer_inputs(model, [(name, layer)], example_inputs)[0])
        pruned, keep = _prune_to(W, k, layer.kernel_size, layer.tile, method, refit, mom, structure)
        _store(layer, pruned, keep)
    return model
