"""Which algorithm runs one 3-D convolution of :mod:`pywino3d.torch`.

A layer runs pywino3d only where that can pay and is exact to float32
Winograd error: stride 1, dilation 1, groups 1, kernel extents <= 7, float32
or float64 on the CPU (or CUDA with CuPy), no autocast.  Everything else goes
to ``torch.nn.functional.conv3d`` -- so float16/bfloat16 and autocast behave
exactly as in ``nn.Conv3d``.

For an eligible problem with ``tile="auto"`` the choice between torch and a
few pywino3d tiles is *measured* by :func:`pywino3d.autotune.choose` on
random data of the problem's shape (once per shape, machine, thread count
and dtype; cached on disk), timing the forward pass with U precomputed for
inference, and forward + backward (filter transform included) when gradients
are needed.  The candidate tiles are :func:`pywino3d._choice.torch_candidates`
(the cost model's three best, which also bounds float32 error, plus the
direct tile 1).  With tuning off (``PYWINO3D_AUTOTUNE=0``) the cost model's tile is
used, as in :func:`pywino3d.conv3d`'s ``tile="auto"``.  Under
``torch.compile``/``torch.export`` nothing is timed: a decision already made
in this process or on disk is reused, otherwise the cost model decides.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from pywino3d._core.geometry import padding_arg, parse_tile
from pywino3d._choice import TORCH, model_tile, parse_name, tile_name, torch_candidates
from pywino3d._core.transforms import MAX_KERNEL

#: Operation name of the decisions in the autotune cache.
OP = "torch.conv3d"


@dataclass(frozen=True)
class Choice:
    """The algorithm for one problem.

    ``algo`` is ``"torch"`` or ``"pywino3d"``; ``tile`` the output tile for
    pywino3d; ``times`` the measured median seconds per candidate name
    (empty when nothing was measured); ``source`` says how it was decided.
    """

    algo: str
    tile: tuple | None = None
    times: dict = field(default_factory=dict)
    source: str = ""

    @property
    def name(self):
        return TORCH if self.algo == TORCH else tile_name(self.tile)






def layer_ineligible(stride, dilation, groups, kernel_size):
    """Why no pywino3d algorithm fits a layer of this structure (a short
    reason), or None: what the layer's own attributes decide, whatever its
    input (:func:`ineligible` adds the tensors' dtype, device, ...)."""
    if any(s != 1 for s in stride):
        return "stride"
    if any(d != 1 for d in dilation):
        return "dilation"
    if groups != 1:
        return "groups"
    if not all(1 <= r <= MAX_KERNEL for r in kernel_size):
        return f"kernel > {MAX_KERNEL}"
    return None


def ineligible(x, weight, stride, dilation, groups):
    """Why pywino3d cannot run this problem (a short reason), or None."""
    why = layer_ineligible(stride, dilation, groups, weight.shape[2:])
    if why is not None:
        return why
    if x.dtype not in (torch.float32, torch.float64) or weight.dtype != x.dtype:
        return f"dtype {str(x.dtype).replace('torch.', '')}"
    if x.device.type not in ("cpu", "cuda"):
        return f"device {x.device.type}"
    if torch.is_autocast_enabled(x.device.type):
        return "autocast"
    if x.device.type == "cuda" and not _cupy_ok():
        return "no CuPy"
    if x.numel() == 0 or weight.numel() == 0:
        return "empty"
    if x.is_complex() or x.layout != torch.strided:
        return "layout"
    return None


def _cupy_ok():
    from pywino3d._backends.dispatch import cuda_status

    return cuda_status()[0]


def problem_key(x_shape, K, kernel_size, pads, channels_last, grad, device_type):
    """The autotune key of one problem (plain ints, strs and bools)."""
    return (tuple(int(s) for s in x_shape), int(K), tuple(int(r) for r in kernel_size), tuple(pads),
            bool(channels_last), "train" if grad else "eval", device_type)


def _threads(device_type):
    return 1 if device_type == "cuda" else torch.get_num_threads()


def _out_extent(x_shape, kernel_size, pads):
    return tuple(s + pads[2 * i] + pads[2 * i + 1] - r + 1 for i, (s, r) in enumerate(zip(x_shape[2:], kernel_size)))


def cost_model_tile(x_shape, K, kernel_size, pads, dtype, device_type="cpu"):
    """The NumPy API's ``tile="auto"`` choice for this problem when nothing
    is timed (:func:`pywino3d._choice.model_tile`)."""
    out = _out_extent(x_shape, kernel_size, pads)
    return model_tile(out, tuple(kernel_size), x_shape[0], x_shape[1], K, torch.finfo(dtype).bits // 8, device_type)


def candidate_set(x_shape, K, kernel_size, pads, dtype, device_type="cpu"):
    """The tiles worth timing (:func:`pywino3d._choice.torch_candidates`)."""
    out = _out_extent(x_shape, kernel_size, pads)
    return torch_candidates(out, tuple(kernel_size), x_shape[0], x_shape[1], K, torch.finfo(dtype).bits // 8,
                            device_type)


def _candidates(x_shape, K, kernel_size, pads, dtype, device, channels_last, grad, bias, tiles):
    """name -> callable running that algorithm once on random data."""
    from pywino3d.torch.ops import filter_transform_op, winograd_conv3d_op

    gen = torch.Generator(device="cpu").manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype).to(device)

    x = rand(*x_shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    w = rand(K, x_shape[1], *kernel_size)
    b = rand(K) if bias else None
    out = _out_extent(x_shape, kernel_size, pads)
    gy = rand(x_shape[0], K, *out)
    tpad = padding_arg(pads, kernel_size)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    ks, pl = list(kernel_size), list(pads)

    def run_torch():
        if grad:
            xg, wg = x.detach().requires_grad_(), w.detach().requires_grad_()
            y = F.conv3d(xg, wg, b, padding=tpad)
            torch.autograd.grad(y, (xg, wg), gy)
        else:
            with torch.no_grad():
                F.conv3d(x, w, b, padding=tpad)
        sync()

    cands = {TORCH: run_torch}
    for tile in tiles:
        tl = list(tile)
        if grad:
            def run(tl=tl):
                xg, wg = x.detach().requires_grad_(), w.detach().requires_grad_()
                y = winograd_conv3d_op(xg, filter_transform_op(wg, tl), b, ks, tl, pl, None)
                torch.autograd.grad(y, (xg, wg), gy)
                sync()
        else:
            with torch.no_grad():
                U = filter_transform_op(w, tl)

            def run(tl=tl, U=U):
                with torch.no_grad():
                    winograd_conv3d_op(x, U, b, ks, tl, pl, None)
                sync()
        cands[tile_name(tile)] = run
    return cands


def _autotune():
    try:
        from pywino3d import autotune
    except ImportError:  # pragma: no cover - the tuner is part of the package
        return None
    return autotune


#: Decisions made in this process: (key, dtype, threads) -> Choice.
_PLANS: dict = {}


def _from_decision(d, source):
    tile = parse_name(d.best)
    return Choice(TORCH if tile is None else "pywino3d", tile, dict(d.times), source)


def decide(x_shape, K, kernel_size, pads, dtype, device, channels_last, grad, bias, tile="auto",
           measure=True):
    """The :class:`Choice` for an eligible problem.

    ``tile`` other than ``"auto"`` is used as given.  With ``measure=False``
    (under tracing) nothing is timed: an earlier decision, else the cost model.
    """
    if not (isinstance(tile, str) and tile == "auto"):
        return Choice("pywino3d", parse_tile(tile), {}, "fixed")
    if _recording.get():
        return Choice(TORCH, None, {}, "recording")
    key = problem_key(x_shape, K, kernel_size, pads, channels_last, grad, device.type)
    threads = _threads(device.type)
    dname = str(dtype).replace("torch.", "")
    mkey = (key, dname, threads)
    hit = _PLANS.get(mkey)
    if hit is not None:
        return hit
    at = _autotune()
    plan = None
    if at is not None and at.enabled():
        if measure:
            tiles = candidate_set(x_shape, K, kernel_size, pads, dtype, device.type)
            d = at.choose(OP, key, _candidates(x_shape, K, kernel_size, pads, dtype, device, channels_last,
                                               grad, bias, tiles), dtype=dname, threads=threads)
            plan = None if d is None else _from_decision(d, "cached" if d.cached else "measured")
        else:
            d = at.lookup(OP, key, dtype=dname, threads=threads)
            plan = None if d is None else _from_decision(d, "cached")
    if plan is None:  # tuning off, or nothing known while tracing
        return Choice("pywino3d", cost_model_tile(tuple(x_shape), int(K), tuple(kernel_size), tuple(pads), dtype,
                                                    device.type),
                    {}, "cost model")
    _PLANS[mkey] = plan
    return plan


_recording = contextvars.ContextVar("pywino3d_torch_recording", default=False)


@contextlib.contextmanager
def recording():
    """Inside: eligible problems run torch without deciding anything (the
    shape-recording pass of ``convert_model``)."""
    token = _recording.set(True)
    try:
        yield
    finally:
        _recording.reset(token)


#: Bumped by :func:`clear`; the layers' per-module memos key on it.
_GENERATION = [0]


def generation():
    """A number that changes whenever the decisions are forgotten."""
    return _GENERATION[0]


def clear():
    """Forget the decisions made in this process (not the autotune cache)."""
    _PLANS.clear()
    _GENERATION[0] += 1
