"""PyTorch layers running pywino3d's kernels (optional extra ``pywino3d[torch]``).

* :class:`Conv3d` -- a drop-in ``nn.Conv3d``: same constructor, parameters,
  state_dict and initialisation; runs pywino3d where that is measured to be
  faster, ``torch.nn.functional.conv3d`` otherwise.
* :func:`conv3d` -- the functional form, same semantics as
  ``torch.nn.functional.conv3d``.
* :func:`convert_model` -- turns the ``nn.Conv3d`` layers of a model into
  :class:`Conv3d` (or Winograd-domain layers), with per-layer tuning;
  :func:`conversion_summary` tells what each layer chose.
* :func:`optimize` -- converts and compiles with the ``"pywino3d"``
  ``torch.compile`` backend, which fuses normalizations, activations and
  residual adds into the convolutions (:mod:`pywino3d.torch.fusion`).
* :class:`WinogradConv3d` -- trains the full Winograd-domain weights U.
* :class:`LowRankWinogradConv3d` -- trains the factors P, Q (U = P Q, or
  U0 + P Q in residual mode).

Every layer calls the custom operators of :mod:`pywino3d.torch.ops`
(``torch.library``, with fake implementations and autograd formulas), so
``torch.compile(fullgraph=True)`` and ``torch.export`` trace through them.
CPU tensors reach NumPy without a copy (``Tensor.numpy()``), CUDA tensors
reach CuPy without a copy (DLPack).  The CPU kernels run with
``torch.get_num_threads()`` threads.  Pruning masks of the Winograd-domain
layers live in the ``columns_mask`` buffer (one flag per position) and reach
the kernels as ``columns``.  See ``docs/torch.md``.
"""
from __future__ import annotations

from pywino3d.torch.conv import Conv3d
from pywino3d.torch.convert import conversion_summary, convert_model
from pywino3d.torch.functional import conv3d
from pywino3d.torch.fusion import _register as _register_backend
from pywino3d.torch.fusion import optimize
from pywino3d.torch.pruning import prune_model
from pywino3d.torch.winograd import LowRankWinogradConv3d, WinogradConv3d, WinogradConv3dFunction

_register_backend()  # torch.compile(model, backend="pywino3d")

__all__ = ["Conv3d", "conv3d", "convert_model", "conversion_summary", "optimize", "prune_model", "WinogradConv3d",
           "LowRankWinogradConv3d", "WinogradConv3dFunction"]
