"""Whole-network fusion: normalization, activation and residual adds folded
into pywino3d's convolutions (issue 28).

A converted network still runs every normalization and activation as torch
ops, each reading and writing the whole activation volume (an InstanceNorm:
a statistics pass and a normalize pass).  Here a network's graph -- captured
by dynamo, so MONAI's shape-dependent Python runs as it is -- is rewritten
so that

* ``conv -> BatchNorm(eval) -> [add] -> act -> [add]`` becomes one
  convolution with an epilogue (per-channel scale and shift, residual,
  activation: :class:`pywino3d.Epilogue`);
* ``conv -> [add] -> InstanceNorm / GroupNorm -> act`` becomes a
  convolution that also returns the per-(sample, channel) mean and variance
  of its output (no statistics pass), and the normalization + activation is
  applied by whoever reads it: a pywino3d convolution as its *prologue*
  (each input value mapped as it is read, the normalized activation never
  written), anything else (pooling, concatenation, a residual add, the
  output) through one fused pass (``channel_affine``);
* a norm whose input is not one of our convolutions gets its statistics from
  one reduction pass, then the same;
* dropout that is off (eval, or ``p=0``) and zero padding are removed, and the
  filter transforms of the spatial layers are cached per weight version
  (dynamo would otherwise re-run them every call).

What does not match these patterns runs as torch ran it.  The rewrite only
applies where no gradient is needed (eval mode under ``torch.no_grad()`` or
``torch.inference_mode()``): a graph traced with gradients enabled is left
exactly as it is, so training steps run today's unfused path.  Norm and
activation parameters are graph inputs, read on every call: changing them
(in place, by an optimizer, ``load_state_dict``) changes the result.

Entry points: ``torch.compile(model, backend="pywino3d")`` (the backend is
registered when :mod:`pywino3d.torch` is imported) and :func:`optimize`.
``PYWINO3D_FUSION=0`` turns the rewrite off (the backend then runs the
captured graph unchanged).
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import operator
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from pywino3d._core.env import getenv
from pywino3d._core.fusion import ACTIVATIONS, DEFAULT_ALPHA, Epilogue, Prologue, apply_epilogue, apply_prologue
from pywino3d._core.geometry import padding_arg
from pywino3d.torch.ops import _columns, _workers, filter_transform_op, to_array, to_tensor, winograd_conv3d_op

__all__ = ["conv3d_fused_op", "channel_affine_op", "fuse_graph", "backend", "optimize", "FusionReport"]


# ------------------------------------------------------------ operators
def _param(t, dtype):
    """A per-channel parameter tensor as an array of the data's dtype."""
    return None if t is None else to_array(t.to(dtype))


def _alpha(alpha, slopes, dtype):
    """A PReLU's slopes (one per channel, or one for all) or the scalar alpha."""
    if slopes is None:
        return alpha
    return float(slopes.reshape(())) if slopes.numel() == 1 else _param(slopes, dtype)


def _prologue(scale, shift, act, alpha, slopes, dtype):
    if scale is None and shift is None and act == "identity":
        return None
    return Prologue(_param(scale, dtype), _param(shift, dtype), act, _alpha(alpha, slopes, dtype))


def _epilogue(scale, shift, act, alpha, slopes, residual, after_activation, stats, dtype):
    if scale is None and shift is None and act == "identity" and residual is None and not stats:
        return None
    return Epilogue(_param(scale, dtype), _param(shift, dtype), act, _alpha(alpha, slopes, dtype),
                    None if residual is None else to_array(residual), after_activation, stats)


@functools.lru_cache(maxsize=None)
def _kernel_fusion():
    """Whether the array API takes ``prologue=`` / ``epilogue=``."""
    from pywino3d import _api

    return "epilogue" in inspect.signature(_api.winograd_conv3d).parameters


def _conv_arrays(x, U, bias, kernel_size, tile, padding, columns, prologue, epilogue, workers):
    """y, or (y, mean, var): the fused convolution on arrays."""
    from pywino3d import _api

    kw = dict(kernel_size=tuple(kernel_size), tile=tuple(tile), padding=padding, bias=bias, columns=columns,
              workers=workers)
    if _kernel_fusion():
        return _api.winograd_conv3d(x, U, prologue=prologue, epilogue=epilogue, **kw)
    return apply_epilogue(_api.winograd_conv3d(apply_prologue(x, prologue), U, **kw), epilogue)


@torch.library.custom_op("pywino3d::conv3d_fused", mutates_args=())
def conv3d_fused_op(x: Tensor, U: Tensor, bias: Optional[Tensor], kernel_size: list[int], tile: list[int],
                    padding: list[int], columns: Optional[Tensor],
                    pro_scale: Optional[Tensor], pro_shift: Optional[Tensor], pro_act: str, pro_alpha: float,
                    pro_slopes: Optional[Tensor],
                    ep_scale: Optional[Tensor], ep_shift: Optional[Tensor], ep_act: str, ep_alpha: float,
                    ep_slopes: Optional[Tensor], residual: Optional[Tensor], after_activation: bool,
                    stats: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(y, mean, var): ``winograd_conv3d`` with a prologue and an epilogue
    (``pywino3d._core.fusion``); mean and var (float64, (N, K)) are empty
    unless ``stats``.  Inference only (no autograd formula)."""
    out = _conv_arrays(to_array(x), to_array(U), None if bias is None else to_array(bias), kernel_size, tile,
                       padding_arg(padding, kernel_size), _columns(columns),
                       _prologue(pro_scale, pro_shift, pro_act, pro_alpha, pro_slopes, x.dtype),
                       _epilogue(ep_scale, ep_shift, ep_act, ep_alpha, ep_slopes, residual, after_activation, stats,
                                 x.dtype),
                       _workers(x))
    if stats:
        y, mean, var = out
        return to_tensor(y, x), to_tensor(mean, x), to_tensor(var, x)
    empty = x.new_empty((0,), dtype=torch.float64)
    return to_tensor(out, x), empty, empty.clone()


@conv3d_fused_op.register_fake
def _(x, U, bias, kernel_size, tile, padding, columns, pro_scale, pro_shift, pro_act, pro_alpha, pro_slopes,
      ep_scale, ep_shift, ep_act, ep_alpha, ep_slopes, residual, after_activation, stats):
    from pywino3d.torch.ops import _out_extent

    y = x.new_empty((x.shape[0], U.shape[1], *_out_extent(x, kernel_size, padding)))
    n = (x.shape[0], U.shape[1]) if stats else (0,)
    return y, x.new_empty(n, dtype=torch.float64), x.new_empty(n, dtype=torch.float64)


def _affine_arrays(x, scale, shift, act, alpha, residual, after_activation, workers):
    import pywino3d

    fn = getattr(pywino3d, "channel_affine", None)
    if fn is not None:
        return fn(x, scale, shift, activation=act, alpha=alpha, residual=residual,
                  after_activation=after_activation, workers=workers)
    return apply_epilogue(apply_prologue(x, Prologue(scale, shift, act, alpha)),
                          None if residual is None else Epilogue(residual=residual))


@torch.library.custom_op("pywino3d::channel_affine", mutates_args=())
def channel_affine_op(x: Tensor, scale: Tensor, shift: Tensor, act: str, alpha: float, slopes: Optional[Tensor],
                      residual: Optional[Tensor], after_activation: bool) -> Tensor:
    """``act(x * scale + shift)`` per (sample, channel), plus ``residual``
    (after the activation when ``after_activation``, else before it): a
    normalization and activation in one pass."""
    if residual is not None and not after_activation:
        raise ValueError("residual: only after_activation=True is supported by channel_affine_op")
    y = _affine_arrays(to_array(x), _param(scale, x.dtype), _param(shift, x.dtype), act,
                       _alpha(alpha, slopes, x.dtype),
                       None if residual is None else to_array(residual), after_activation, _workers(x))
    return to_tensor(y, x)


@channel_affine_op.register_fake
def _(x, scale, shift, act, alpha, slopes, residual, after_activation):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


# ------------------------------------------------------------ runtime helpers called by rewritten graphs
class _FilterCache:
    """``filter_transform_op(w, tile)`` computed once per weight version: the
    graph passes the live parameter on every call, so an in-place update
    (optimizer step, ``load_state_dict``) bumps its version and recomputes."""

    __name__ = "cached_filter_transform"

    def __init__(self):
        self._hit = {}

    def __call__(self, w, tile):
        key = (tuple(tile), w.data_ptr(), w._version, tuple(w.shape), w.dtype, w.device)
        slot = id(w), tuple(tile)
        hit = self._hit.get(slot)
        if hit is not None and hit[0] == key:
            return hit[1]
        U = filter_transform_op(w, list(tile))
        self._hit[slot] = (key, U)
        return U


def _norm_affine(mean, var, weight, bias, eps, groups, channels):
    """Per-(sample, channel) scale and shift of a normalization from its
    input's per-(sample, channel) moments: (N, C) float32 tensors.
    ``groups``: None for per-channel statistics (InstanceNorm, GroupNorm
    with one channel per group), else the GroupNorm's group count."""
    mean = mean.double()
    var = var.double()
    n = mean.shape[0]
    if groups is not None:  # GroupNorm: merge channel moments per group (equal voxel counts)
        g = groups
        m = mean.reshape(n, g, -1)
        v = var.reshape(n, g, -1)
        gm = m.mean(dim=2, keepdim=True)
        gv = v.mean(dim=2, keepdim=True) + ((m - gm) ** 2).mean(dim=2, keepdim=True)
        mean = gm.expand_as(m).reshape(n, channels)
        var = gv.expand_as(v).reshape(n, channels)
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight.double()
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias.double()
    return scale.float(), shift.float()


def _moments(t):
    """Per-(sample, channel) mean and biased variance (one pass): the CPU
    kernel's float64 statistics of ``channel_affine`` (9 ms on 16 x 96^3,
    against 41 ms for ``torch.var_mean``, 2 threads), torch's elsewhere."""
    if t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) and t.dim() == 5:
        import pywino3d

        _, mean, var = pywino3d.channel_affine(to_array(t), stats=True, workers=_workers(t))
        return torch.from_numpy(mean), torch.from_numpy(var)
    var, mean = torch.var_mean(t.float(), dim=tuple(range(2, t.dim())), correction=0)
    return mean, var


def _bn_affine(running_mean, running_var, weight, bias, eps):
    """Per-channel scale and shift of an eval-mode BatchNorm: the norm's
    affine map with the running statistics as the moments."""
    scale, shift = _norm_affine(running_mean[None], running_var[None], weight, bias, eps, None,
                                running_mean.shape[0])
    return scale[0], shift[0]


def _upsample_into(y, x, w, b):
    """y = conv_transpose3d(x, w, b, stride=kernel_size) for a kernel equal to
    its stride: each input voxel becomes one kd x kh x kw block of outputs, a
    GEMM (Co*kd*kh*kw x Ci) @ (Ci x voxels) and a shuffle of its rows into y
    (any strides: a channel slice of a concatenation).  torch's
    slow_conv_transpose3d took 2-2.7x as long on BasicUNet's up-sampling
    layers (2 threads)."""
    N, Ci, D, H, W = x.shape
    Co, (kd, kh, kw) = w.shape[1], w.shape[2:]
    wm = w.reshape(Ci, Co * kd * kh * kw).t()
    for n in range(N):
        g = torch.mm(wm, x[n].reshape(Ci, D * H * W))
        y[n].view(Co, D, kd, H, kh, W, kw).copy_(g.view(Co, kd, kh, kw, D, H, W).permute(0, 4, 1, 5, 2, 6, 3))
    if b is not None:
        y += b.view(1, Co, 1, 1, 1)
    return y


def _upsample(x, w, b):
    """conv_transpose3d with kernel == stride as a GEMM and a shuffle."""
    N, _, D, H, W = x.shape
    kd, kh, kw = w.shape[2:]
    y = torch.empty((N, w.shape[1], D * kd, H * kh, W * kw), dtype=x.dtype, device=x.device)
    return _upsample_into(y, x.contiguous(), w, b)


def _cat_upsample(parts, index, x, w, b):
    """torch.cat(parts, dim=1) where ``parts[index]`` is ``_upsample(x, w,
    b)``: the up-sampled channels are written into the concatenation's
    buffer directly (one copy fewer)."""
    up = _upsample_shape(x, w)
    shapes = [tuple(p.shape) if i != index else up for i, p in enumerate(parts)]
    out = torch.empty((up[0], sum(s[1] for s in shapes), *up[2:]), dtype=x.dtype, device=x.device)
    c0 = 0
    for i, s in enumerate(shapes):
        if i == index:
            _upsample_into(out[:, c0:c0 + s[1]], x.contiguous(), w, b)
        else:
            out[:, c0:c0 + s[1]].copy_(parts[i])
        c0 += s[1]
    return out


def _upsample_shape(x, w):
    N, _, D, H, W = x.shape
    kd, kh, kw = w.shape[2:]
    return (N, int(w.shape[1]), D * kd, H * kh, W * kw)


# ------------------------------------------------------------ graph analysis
_CONV = torch.ops.pywino3d.winograd_conv3d.default
_FILTER = torch.ops.pywino3d.filter_transform.default

_ACT_FUNCS = {
    F.relu: "relu", torch.relu: "relu", torch.relu_: "relu", F.relu_: "relu",
    F.leaky_relu: "leaky_relu", F.leaky_relu_: "leaky_relu",
    F.prelu: "prelu", torch.prelu: "prelu",
    F.elu: "elu", F.elu_: "elu",
    F.silu: "silu", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", torch.tanh: "tanh", F.tanh: "tanh",
}
_ACT_METHODS = {"relu": "relu", "relu_": "relu", "sigmoid": "sigmoid", "tanh": "tanh"}
_ADDS = (operator.add, operator.iadd, torch.add)
_ADD_METHODS = ("add", "add_", "__add__", "__iadd__")


def _bind(fn, node):
    try:
        b = inspect.signature(fn).bind(*node.args, **node.kwargs)
    except (TypeError, ValueError):
        return None
    b.apply_defaults()
    return b.arguments


def _val(node):
    """The example value (fake tensor) dynamo recorded for a node, if any."""
    v = node.meta.get("example_value", node.meta.get("val")) if hasattr(node, "meta") else None
    return v if isinstance(v, torch.Tensor) else None


def _activation(node):
    """(kind, alpha, slopes node) of an activation node, else None."""
    if node.op == "call_function" and node.target in _ACT_FUNCS:
        kind = _ACT_FUNCS[node.target]
        if kind == "leaky_relu":
            a = _bind(F.leaky_relu, node)
            return (kind, float(a["negative_slope"]), None) if a else None
        if kind == "elu":
            a = _bind(F.elu, node)
            return (kind, float(a["alpha"]), None) if a else None
        if kind == "prelu":
            w = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
            return (kind, DEFAULT_ALPHA["prelu"], w) if isinstance(w, torch.fx.Node) else None
        return kind, 0.0, None
    if node.op == "call_method" and node.target in _ACT_METHODS:
        return _ACT_METHODS[node.target], 0.0, None
    return None


def _identity_input(node):
    """The input of a node that is an identity in inference (dropout off,
    zero padding), else None."""
    if node.op != "call_function":
        return None
    if node.target in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout):
        a = _bind(node.target, node)
        if a is not None and (not a["training"] or a["p"] == 0):
            return a["input"]
    if node.target in (F.pad, torch.constant_pad_nd, torch._C._nn.pad):
        pad = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
        if isinstance(pad, (list, tuple)) and all(isinstance(p, int) and p == 0 for p in pad):
            return node.args[0]
    return None


def _upsampling(node):
    """(x, w, b) of a transposed convolution whose kernel equals its stride
    (no padding, groups or dilation), else None."""
    if node.op != "call_function" or node.target not in (F.conv_transpose3d, torch.conv_transpose3d):
        return None
    names = ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation")
    a = dict(zip(names, (None, None, None, 1, 0, 0, 1, 1)))  # (a builtin: no signature to bind)
    a.update(zip(names, node.args))
    a.update(node.kwargs)
    w = _val(a["weight"]) if isinstance(a["weight"], torch.fx.Node) else None
    if w is None or w.dim() != 5 or not _is_cpu_float(node):
        return None
    k = tuple(int(s) for s in w.shape[2:])
    triple = lambda v: tuple(v) if isinstance(v, (list, tuple)) else (v,) * 3  # noqa: E731
    if triple(a["stride"]) != k or any(triple(a["padding"])) or any(triple(a["output_padding"])) \
            or a["groups"] != 1 or set(triple(a["dilation"])) != {1}:
        return None
    return a["input"], a["weight"], a["bias"]


def _norm(node):
    """What a normalization node computes: dict(kind, input, weight, bias,
    eps, groups) or, for an eval BatchNorm, running stats; None otherwise."""
    if node.op != "call_function":
        return None
    if node.target is F.instance_norm:
        a = _bind(F.instance_norm, node)
        if a is None or a["running_mean"] is not None or a["running_var"] is not None or not a["use_input_stats"]:
            return None
        return dict(kind="instance", input=a["input"], weight=a["weight"], bias=a["bias"], eps=a["eps"], groups=None)
    if node.target is F.group_norm:
        a = _bind(F.group_norm, node)
        if a is None or not isinstance(a["num_groups"], int):
            return None
        return dict(kind="group", input=a["input"], weight=a["weight"], bias=a["bias"], eps=a["eps"],
                    groups=None if a["num_groups"] == _channels(a["input"]) else a["num_groups"])
    if node.target is F.batch_norm:
        a = _bind(F.batch_norm, node)
        if a is None or a["training"] or a["running_mean"] is None or a["running_var"] is None:
            return None
        return dict(kind="batch", input=a["input"], weight=a["weight"], bias=a["bias"], eps=a["eps"],
                    running_mean=a["running_mean"], running_var=a["running_var"])
    return None


def _channels(node):
    v = _val(node) if isinstance(node, torch.fx.Node) else None
    return None if v is None or v.dim() < 2 else int(v.shape[1])


def _same_shape(a, b):
    va, vb = _val(a), _val(b)
    return va is not None and vb is not None and tuple(va.shape) == tuple(vb.shape) and va.dtype == vb.dtype


def _is_cpu_float(node):
    v = _val(node)
    return v is not None and v.device.type == "cpu" and v.dtype in (torch.float32, torch.float64) and v.dim() == 5


@dataclasses.dataclass
class _Conv:
    """A pywino3d convolution of the graph and what it absorbs."""
    node: torch.fx.Node
    anchor: torch.fx.Node            # the last absorbed node: the fused op is emitted in its place
    ep_affine: Optional[tuple] = None   # (running_mean, running_var, weight, bias, eps) of a folded BatchNorm
    residual: Optional[torch.fx.Node] = None
    after_activation: bool = False
    act: Optional[tuple] = None      # (kind, alpha, slopes node)
    stats: bool = False
    prologue: Optional[tuple] = None  # (input node, norm key, act)
    absorbed: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class FusionReport:
    """What one graph rewrite fused (counts per pattern)."""
    convolutions: int = 0
    batchnorm_epilogues: int = 0
    activation_epilogues: int = 0
    residual_epilogues: int = 0
    stats_epilogues: int = 0
    prologues: int = 0
    affine_passes: int = 0
    moment_passes: int = 0
    removed_identities: int = 0
    cached_filters: int = 0
    upsamplings: int = 0
    concatenations: int = 0

    def __str__(self):
        return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in dataclasses.asdict(self).items() if v)


def _users(node):
    return list(node.users)


def fuse_graph(gm: torch.fx.GraphModule) -> FusionReport:
    """Rewrite ``gm`` in place (see the module docstring); returns what was
    fused.  Nodes it does not recognise are left as they are."""
    graph = gm.graph
    report = FusionReport()
    filters = _FilterCache()
    # 0. identities and cached filter transforms
    for node in list(graph.nodes):
        src = _identity_input(node)
        if isinstance(src, torch.fx.Node) and _same_shape(node, src):
            node.replace_all_uses_with(src)
            graph.erase_node(node)
            report.removed_identities += 1
        elif node.op == "call_function" and node.target is _FILTER:
            node.target = filters
            report.cached_filters += 1
    _rewrite_upsampling(graph, report)
    convs = {}
    for node in graph.nodes:
        if node.op == "call_function" and node.target is _CONV and _is_cpu_float(node):
            convs[node] = _Conv(node, node)
    # the node a value flows out of: conv output or its absorbed successors
    out_of = {c.node: c for c in convs.values()}

    # 1. epilogue absorption: BatchNorm(eval) -> add -> act -> add along single-user chains
    for c in convs.values():
        while True:
            users = _users(c.anchor)
            if len(users) != 1:
                break
            u = users[0]
            nrm = _norm(u)
            if nrm is not None and nrm["kind"] == "batch" and nrm["input"] is c.anchor and c.ep_affine is None \
                    and c.residual is None and c.act is None:
                c.ep_affine = (nrm["running_mean"], nrm["running_var"], nrm["weight"], nrm["bias"], nrm["eps"])
                report.batchnorm_epilogues += 1
            elif _is_add(u, c.anchor) and c.residual is None and _same_shape(u, c.anchor):
                other = _other_operand(u, c.anchor)
                if other is None or not _same_shape(other, c.anchor) or _depends_on(other, c.anchor):
                    break  # (a broadcast operand, e.g. a per-channel constant, stays torch's add)
                c.residual, c.after_activation = other, c.act is not None
                report.residual_epilogues += 1
            elif _activation(u) is not None and c.act is None and u.args[0] is c.anchor:
                c.act = _activation(u)
                report.activation_epilogues += 1
            else:
                break
            c.absorbed.append(u)
            out_of.pop(c.anchor, None)
            c.anchor = u
            out_of[u] = c

    # 2. normalizations with input statistics (instance, group)
    norms = []
    for node in graph.nodes:
        nrm = _norm(node)
        if nrm is None or nrm["kind"] == "batch" or not _is_cpu_float(node):
            continue
        src = nrm["input"]
        if not isinstance(src, torch.fx.Node) or _channels(src) is None:
            continue
        chain_out, act = node, ("identity", 0.0, None)
        users = _users(node)
        if len(users) == 1 and _activation(users[0]) is not None and users[0].args[0] is node:
            chain_out, act = users[0], _activation(users[0])
        producer = out_of.get(src)  # (other readers of src are fine: the stats leave it unchanged)
        use_epilogue = producer is not None
        norms.append(dict(node=node, nrm=nrm, src=src, chain_out=chain_out, act=act,
                          producer=producer if use_epilogue else None))
        if use_epilogue:
            producer.stats = True
            report.stats_epilogues += 1
        else:
            report.moment_passes += 1
    for item in norms:
        for u in _users(item["chain_out"]):
            c = convs.get(u)
            if c is not None and c.prologue is None and u.args[0] is item["chain_out"] and \
                    item["chain_out"] not in u.args[1:] and not u.kwargs:
                c.prologue = item
                report.prologues += 1
    report.convolutions = len(convs)
    _emit(gm, convs, norms, report)
    return report


def _rewrite_upsampling(graph, report):
    """Transposed convolutions with kernel == stride become a GEMM and a
    shuffle; when one's only reader is a channel concatenation, it is
    written into the concatenation's buffer."""
    for node in list(graph.nodes):
        up = _upsampling(node)
        if up is None:
            continue
        x, w, b = up
        users = _users(node)
        cat = users[0] if len(users) == 1 else None
        if cat is not None and cat.op == "call_function" and cat.target is torch.cat and \
                isinstance(cat.args[0], (list, tuple)) and list(cat.args[0]).count(node) == 1 and \
                (cat.kwargs.get("dim", cat.args[1] if len(cat.args) > 1 else 0) in (1, -4)) and \
                all(isinstance(p, torch.fx.Node) and _is_cpu_float(p) for p in cat.args[0]):
            parts = list(cat.args[0])
            with graph.inserting_before(cat):
                new = graph.call_function(_cat_upsample, ([None if p is node else p for p in parts], parts.index(node),
                                                                 x, w, b))
            new.meta = dict(cat.meta)
            cat.replace_all_uses_with(new)
            graph.erase_node(cat)
            graph.erase_node(node)
            report.concatenations += 1
        else:
            with graph.inserting_before(node):
                new = graph.call_function(_upsample, (x, w, b))
            new.meta = dict(node.meta)
            node.replace_all_uses_with(new)
            graph.erase_node(node)
        report.upsamplings += 1


def _is_add(node, operand):
    if node.op == "call_function" and node.target in _ADDS:
        if node.target is torch.add and ("alpha" in node.kwargs or len(node.args) > 2):
            return False
        return len(node.args) == 2 and operand in node.args and not node.kwargs
    if node.op == "call_method" and node.target in _ADD_METHODS:
        return len(node.args) == 2 and operand in node.args and not node.kwargs
    return False


def _other_operand(add, operand):
    a, b = add.args
    other = b if a is operand else a
    if other is operand or not isinstance(other, torch.fx.Node):
        return None
    return other


def _depends_on(node, target, limit=10000):
    """Whether ``node`` is computed from ``target`` (then it cannot be an
    input of target's own fused op)."""
    seen, stack = set(), [node]
    while stack and len(seen) < limit:
        n = stack.pop()
        if n is target:
            return True
        if n in seen:
            continue
        seen.add(n)
        stack.extend(a for a in n.all_input_nodes)
    return False


def _emit(gm, convs, norms, report):
    """Build the rewritten graph: every original node in order, the fused
    convolutions in place of their anchors, the norms' scale and shift where
    the norms were, one affine pass for each chain read by anything other
    than a pywino3d convolution."""
    old = gm.graph
    new = torch.fx.Graph()
    env = {}
    by_anchor = {c.anchor: c for c in convs.values()}
    absorbed = {n for c in convs.values() for n in c.absorbed}
    absorbed.update(c.node for c in convs.values() if c.anchor is not c.node)
    norm_at = {item["node"]: item for item in norms}
    chain_nodes = {}
    for item in norms:
        chain_nodes[item["node"]] = item
        chain_nodes[item["chain_out"]] = item
    stats_of = {}     # producer _Conv -> (mean, var) new nodes
    affine_of = {}    # norm node -> (scale, shift) new nodes
    pass_of = {}      # norm node -> materialized new node

    def m(a):
        return torch.fx.node.map_arg(a, arg_of)

    def materialize(item):
        key = item["node"]
        if key not in pass_of:
            kind, alpha, slopes = item["act"]
            scale, shift = affine_of[key]
            pass_of[key] = new.call_function(torch.ops.pywino3d.channel_affine.default,
                                             (arg_of(item["src"]), scale, shift, kind, float(alpha),
                                              m(slopes), None, False))
            report.affine_passes += 1
        return pass_of[key]

    def arg_of(n):
        """New value for a use of old node n (a fused chain's output is
        materialized by one affine pass on its first use that is not a
        prologue)."""
        item = chain_nodes.get(n)
        if item is not None and n is item["chain_out"]:
            return materialize(item)
        return env[n]

    for node in old.nodes:
        if node.op == "output":
            new.output(torch.fx.node.map_arg(node.args[0], arg_of))
            continue
        if node in absorbed and node not in by_anchor:
            continue
        if node in norm_at:
            item = norm_at[node]
            nrm = item["nrm"]
            c = item["producer"]
            if c is not None:
                mean, var = stats_of[id(c)]
            else:
                mv = new.call_function(_moments, (arg_of(item["src"]),))
                mean, var = new.call_function(operator.getitem, (mv, 0)), new.call_function(operator.getitem, (mv, 1))
            aff = new.call_function(_norm_affine, (mean, var, m(nrm["weight"]), m(nrm["bias"]), float(nrm["eps"]),
                                                   nrm["groups"], _channels(item["src"])))
            affine_of[node] = (new.call_function(operator.getitem, (aff, 0)),
                               new.call_function(operator.getitem, (aff, 1)))
            continue
        if node in chain_nodes:  # the chain's activation: applied by its readers
            continue
        c = by_anchor.get(node)
        if c is not None:
            env[node] = _emit_conv(new, c, arg_of, affine_of, stats_of, m)
            continue
        new_node = new.node_copy(node, arg_of)
        env[node] = new_node
    gm.graph = new
    new.eliminate_dead_code()
    new.lint()
    gm.recompile()


def _emit_conv(new, c, arg_of, affine_of, stats_of, m):
    x, U, bias, kernel_size, tile, padding, columns = (list(c.node.args) + [None] * 7)[:7]
    pro = (None, None, "identity", 0.0, None)
    if c.prologue is not None:
        item = c.prologue
        scale, shift = affine_of[item["node"]]
        kind, alpha, slopes = item["act"]
        x_new = arg_of(item["src"])
        pro = (scale, shift, kind, float(alpha), m(slopes))
    else:
        x_new = arg_of(x)
    ep_scale = ep_shift = None
    if c.ep_affine is not None:
        rm, rv, w, b, eps = c.ep_affine
        aff = new.call_function(_bn_affine, (m(rm), m(rv), m(w), m(b), float(eps)))
        ep_scale, ep_shift = new.call_function(operator.getitem, (aff, 0)), new.call_function(operator.getitem, (aff, 1))
    kind, alpha, slopes = c.act if c.act is not None else ("identity", 0.0, None)
    out = new.call_function(torch.ops.pywino3d.conv3d_fused.default,
                            (x_new, m(U), m(bias), list(kernel_size), list(tile), list(padding), m(columns), *pro,
                             ep_scale, ep_shift, kind, float(alpha), m(slopes), m(c.residual), c.after_activation,
                             c.stats))
    y = new.call_function(operator.getitem, (out, 0))
    if c.stats:
        stats_of[id(c)] = (new.call_function(operator.getitem, (out, 1)), new.call_function(operator.getitem, (out, 2)))
    return y


# ------------------------------------------------------------ entry points
def _needs_grad(example_inputs):
    return torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in example_inputs)


def enabled():
    """Whether the rewrite is on (``PYWINO3D_FUSION``, default 1)."""
    return getenv("PYWINO3D_FUSION", "1") not in ("0", "false", "False", "")


#: FusionReports of the graphs the backend rewrote, newest last (for tests
#: and ``optimize(..., verbose=True)``); bounded.
reports = []


def backend(gm: torch.fx.GraphModule, example_inputs):
    """The ``torch.compile`` backend ``"pywino3d"``: the captured graph,
    fused where nothing needs gradients, run eagerly (no inductor)."""
    if enabled() and not _needs_grad(example_inputs):
        reports.append(fuse_graph(gm))
        del reports[:-64]
    return gm.forward


def _register():
    from torch._dynamo.backends.registry import _BACKENDS, register_backend

    if "pywino3d" not in _BACKENDS:
        register_backend(name="pywino3d")(backend)


#: What :func:`optimize` measured and chose, newest last: dicts with the
#: fused and unfused forward times (ms, medians) and the choice.
decisions = []


def _alternating_ms(fns, args, rounds):
    """Median ms of each callable, timed alternately (a slow phase of a
    shared machine hits both)."""
    import statistics
    import time

    ts = [[] for _ in fns]
    for _ in range(rounds):
        for f, t in zip(fns, ts):
            t0 = time.perf_counter()
            f(*args)
            t.append(time.perf_counter() - t0)
    return [1e3 * statistics.median(t) for t in ts]


def optimize(model, example_inputs=None, *, convert=True, dynamic=False, check=True, rounds=3):
    """A network made fast for inference: its ``nn.Conv3d`` layers converted
    (:func:`convert_model`, tuned on ``example_inputs``), then compiled with
    the ``"pywino3d"`` backend so that normalizations, activations and
    residual adds are fused into the convolutions.

    Parameters
    ----------
    model : nn.Module
        Converted in place when ``convert``.
    example_inputs : tensor or tuple of tensors, optional
        Used to tune the layers and to capture the graph once (under
        ``torch.no_grad()``).
    convert : bool
        Run :func:`convert_model` first (skip for a model already converted).
    dynamic : bool
        Passed to ``torch.compile`` (False: a new input shape re-captures).
    check : bool
        With ``example_inputs``: time the fused and the unfused (converted)
        network alternately, ``rounds`` calls each after a warm-up, and
        return the unfused one where fusion is not faster -- fusing must
        never make a network slower (the choice is appended to
        :data:`decisions`).
    rounds : int

    Returns
    -------
    callable
        The compiled model (or, where ``check`` found it slower, ``model``
        itself, converted); call it under ``torch.no_grad()`` or
        ``torch.inference_mode()`` for the fused path (with gradients
        enabled it runs the converted layers unfused).

    Examples
    --------
    >>> import torch
    >>> from pywino3d.torch import optimize
    >>> net = torch.nn.Sequential(torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.InstanceNorm3d(8),
    ...                           torch.nn.ReLU(), torch.nn.Conv3d(8, 2, 3, padding=1)).eval()
    >>> x = torch.randn(1, 1, 12, 12, 12)
    >>> with torch.no_grad():
    ...     ref = net(x)
    ...     fast = optimize(net, x)
    ...     bool(torch.allclose(fast(x), ref, atol=1e-4))
    True
    """
    from pywino3d.torch.convert import convert_model

    _register()
    if convert:
        convert_model(model, example_inputs=example_inputs)
    compiled = torch.compile(model, backend="pywino3d", dynamic=dynamic)
    if example_inputs is not None:
        args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
        with torch.no_grad():
            compiled(*args)
            if check and enabled():
                model(*args)  # warm-up of the unfused path
                fused, plain = _alternating_ms((compiled, model), args, rounds)
                decisions.append({"model": type(model).__name__, "input": [tuple(a.shape) for a in args],
                                  "fused_ms": fused, "unfused_ms": plain, "fused": fused < plain})
                del decisions[:-64]
                if fused >= plain:
                    return model
    return compiled
