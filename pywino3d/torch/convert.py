"""Converting a user's model: :func:`convert_model` and
:func:`conversion_summary`."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from pywino3d._choice import DOMAIN_TILE
from pywino3d._core.geometry import parse_tile
from pywino3d.torch import algorithm
from pywino3d.torch.conv import Conv3d
from pywino3d.torch.functional import _check_tile
from pywino3d.torch.algorithm import TORCH
from pywino3d.torch.winograd import LowRankWinogradConv3d, WinogradConv3d

__all__ = ["convert_model", "conversion_summary", "ConversionSummary"]


WEIGHTS = ("spatial", "winograd", "lowrank")


def _winograd_eligible(conv):
    return (type(conv) in (nn.Conv3d, Conv3d) and conv.padding_mode == "zeros"
            and algorithm.layer_ineligible(conv.stride, conv.dilation, conv.groups, conv.kernel_size) is None)


def _to_winograd(child, weights, tile, rank, mode):
    tile = DOMAIN_TILE if isinstance(tile, str) else tile  # U is held for one tile (pywino3d._choice)
    kw = dict(kernel_size=child.kernel_size, padding=child.padding, tile=tile, bias=child.bias is not None,
              weight=child.weight, dtype=child.weight.dtype)
    if weights == "winograd":
        new = WinogradConv3d(child.in_channels, child.out_channels, **kw)
    else:
        new = LowRankWinogradConv3d(child.in_channels, child.out_channels, rank=rank, mode=mode, **kw)
    if child.bias is not None:
        with torch.no_grad():
            new.bias.copy_(child.bias)
    new.train(child.training)
    return new.to(child.weight.device)


def _replace(module, weights, tile, rank, mode):
    for name, child in list(module.named_children()):
        if type(child) is nn.Conv3d and weights == "spatial":
            setattr(module, name, Conv3d.from_conv3d(child, tile=tile))
        elif weights != "spatial" and _winograd_eligible(child):
            setattr(module, name, _to_winograd(child, weights, tile, rank, mode))
        else:
            _replace(child, weights, tile, rank, mode)


def _describe(x):
    cl = x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d)
    return tuple(x.shape), x.dtype, x.device, cl


def _run_example(model, example_inputs):
    """One forward pass of the unconverted model in eval mode without
    gradients (BatchNorm statistics and the like are left untouched);
    returns {layer name: (input shape, dtype, device, channels_last)}.
    Bad example inputs fail here, before anything is converted."""
    shapes, hooks = {}, []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv3d):
            hooks.append(m.register_forward_pre_hook(
                lambda mod, args, name=name: shapes.setdefault(name, _describe(args[0])) and None))
    was = {m: m.training for m in model.modules()}
    plans_before = {m: dict(m.plans) for m in model.modules() if isinstance(m, Conv3d)}
    try:
        model.eval()
        with torch.no_grad(), algorithm.recording():
            model(*example_inputs)
    finally:
        for h in hooks:
            h.remove()
        for m, t in was.items():
            m.training = t
        for m, p in plans_before.items():
            m.plans = p
    return shapes


def _progress(items):
    """A tqdm progress bar over ``items`` where tqdm is installed (the
    ``torch`` extra brings it; a user who installed torch alone may lack
    it), else None: the tuning runs the same, silently."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(items, desc="pywino3d: tuning layers", unit="layer", delay=1.0, leave=False)


def _tune(model, shapes):
    layers = dict(model.named_modules())
    todo = [(name, d) for name, d in shapes.items() if isinstance(layers.get(name), Conv3d)]
    train = model.training
    bar = _progress(todo)
    with contextlib.nullcontext(todo) if bar is None else bar as items:
        for name, (shape, dtype, device, cl) in items:
            if bar is not None:
                bar.set_postfix_str(name[-30:])
            x = torch.randn(shape, dtype=dtype, device=device) if dtype.is_floating_point else \
                torch.zeros(shape, dtype=dtype, device=device)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            with torch.set_grad_enabled(train):
                layers[name](x.requires_grad_(train and dtype.is_floating_point))


def convert_model(model, *, example_inputs=None, weights="spatial", tile="auto", rank=None, mode="factor"):
    """Convert the ``nn.Conv3d`` layers of ``model``, in place.

    Parameters
    ----------
    model : nn.Module
    example_inputs : tensor or tuple of tensors, optional
        Inputs of one forward pass.  With them, every layer's input shape is
        recorded (one pass in eval mode without gradients: BatchNorm
        statistics stay untouched) and its algorithm chosen before this
        function returns -- for training if ``model.training``, else for
        inference -- with a progress bar when that takes over a second.
        Without them each layer chooses at its first forward of a new shape.
    weights : {"spatial", "winograd", "lowrank"}
        ``"spatial"``: every ``nn.Conv3d`` becomes a :class:`Conv3d` that
        shares its parameters (the state_dict and an optimizer built before
        converting stay valid).  ``"winograd"``: each eligible layer (stride
        1, dilation 1, groups 1, zero padding, kernel extents <= 7) becomes a
        :class:`WinogradConv3d` (trains U); ``"lowrank"``: a
        :class:`LowRankWinogradConv3d` initialised by truncated SVD (needs
        ``rank``; exact when ``rank >= rd*rh*rw``).
    tile : "auto", int or tuple of 3 ints
        For ``"spatial"`` as in :class:`Conv3d`; for the Winograd-domain
        layers the tile of their parameterisation (``"auto"`` means 2).
    rank : int, optional
        For ``weights="lowrank"``.
    mode : {"factor", "residual"}
        For ``weights="lowrank"``.

    Returns
    -------
    model : the same module, converted

    See Also
    --------
    conversion_summary : what each layer chose, with the measured times.

    Examples
    --------
    >>> import torch
    >>> from pywino3d.torch import convert_model
    >>> net = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.Conv3d(4, 4, 3, stride=2))
    >>> x = torch.randn(1, 2, 6, 6, 6)
    >>> ref = net(x)
    >>> sd = list(net.state_dict())
    >>> [type(m).__name__ for m in convert_model(net, example_inputs=x)]
    ['Conv3d', 'Conv3d']
    >>> list(net.state_dict()) == sd and bool(torch.allclose(net(x), ref, atol=1e-5))
    True
    >>> [type(m).__name__ for m in convert_model(torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3)), weights="winograd")]
    ['WinogradConv3d']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if weights not in WEIGHTS:
        raise ValueError(f"weights: expected one of {WEIGHTS}, got {weights!r}")
    if weights == "spatial":
        tile = _check_tile(tile)
    else:
        if not isinstance(tile, str):
            parse_tile(tile)
        elif tile != "auto":
            raise ValueError(f"tile: expected 'auto', an int or 3 ints, got {tile!r}")
        if example_inputs is not None:
            raise ValueError("example_inputs: only used with weights='spatial' (the Winograd-domain "
                             "layers have a fixed tile)")
    if weights == "lowrank":
        if rank is None:
            raise ValueError("rank: weights='lowrank' needs a rank (an int >= 1)")
        from pywino3d._core.validation import as_int

        as_int("rank", rank, 1)
        if mode not in ("factor", "residual"):
            raise ValueError(f"mode: expected 'factor' or 'residual', got {mode!r}")
    elif rank is not None:
        raise ValueError(f"rank: only used with weights='lowrank', got rank={rank!r} with weights={weights!r}")
    if type(model) is nn.Conv3d:
        raise TypeError("model: is a bare nn.Conv3d, which cannot be replaced in place; use "
                        "pywino3d.torch.Conv3d.from_conv3d(conv) or wrap it in a module")
    shapes = None
    if example_inputs is not None:
        items = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        if not items or not all(isinstance(t, torch.Tensor) for t in items):
            raise TypeError("example_inputs: expected a tensor or a tuple of tensors")
        shapes = _run_example(model, items)
    _replace(model, weights, tile, rank, mode)
    if shapes is not None:
        _tune(model, shapes)
    return model


class ConversionSummary(list):
    """Rows (layer, input shape, mode, choice, ms, torch ms) printed as a table."""

    HEADER = ("layer", "input shape", "mode", "choice", "ms", "torch ms", "speed-up")

    def __str__(self):
        rows = [self.HEADER] + [tuple("" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))
                                      for v in r) for r in self]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.HEADER))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def _repr_pretty_(self, p, cycle):  # IPython
        p.text(str(self))


def conversion_summary(model):
    """What every :class:`Conv3d` of ``model`` chose, per input shape and mode.

    Returns
    -------
    ConversionSummary
        A list of rows ``(layer, input shape, mode, choice, ms, torch ms,
        speed-up)``; ``print`` shows a table.  ``ms`` is the measured median
        of the chosen algorithm and ``torch ms`` that of
        ``torch.nn.functional.conv3d`` (blank when not measured: a decision
        from the cost model, a fixed tile, or an ineligible layer, whose
        reason is shown as its choice).

    Examples
    --------
    >>> import torch
    >>> from pywino3d.torch import convert_model, conversion_summary
    >>> net = convert_model(torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, stride=2)))
    >>> _ = net(torch.randn(1, 2, 6, 6, 6))
    >>> print(conversion_summary(net))
    layer  input shape      mode  choice          ms  torch ms  speed-up
    -----  ---------------  ----  --------------  --  --------  --------
    0      (1, 2, 6, 6, 6)  -     torch (stride)
    """
    rows = ConversionSummary()
    for name, m in model.named_modules():
        if not isinstance(m, Conv3d):
            continue
        for (shape, mode), p in m.plans.items():
            if shape == "ineligible":
                rows.append((name, mode, "-", f"torch ({p.source})", None, None, None))
                continue
            ms = p.times.get(p.name)
            tms = p.times.get(TORCH)
            choice = p.name if p.source in ("measured", "cached") else f"{p.name} ({p.source})"
            rows.append((name, shape, mode, choice, None if ms is None else ms * 1e3,
                         None if tms is None else tms * 1e3,
                         None if ms is None or tms is None else tms / ms))
    return rows
