"""pywino3d: fast 3-D convolution with the Winograd algorithm.

Public API
----------
conv3d                      spatial weights in, output out (tile="auto")
filter_transform            spatial weights -> Winograd-domain weights U
winograd_conv3d             convolution with U, optionally column-sparse
winograd_conv3d_backward    (grad_x, grad_U)
filter_transform_backward   grad_U -> grad_w
Prologue, Epilogue          norm / activation / residual / statistics fused around a convolution
channel_affine              the same maths in one pass where the consumer is not a convolution
winograd_matrices           exact Toom-Cook matrices (AT, G, BT)
show_versions               versions, OpenMP, threads, backends
use_backend / set_backend   choose "cpu", "cuda" or "auto" at runtime
LowRankWinograd             U = P @ Q (+ U0) low-rank Winograd weights
column_importance, select_columns, select_columns_global, cubic_density
                            column pruning (pywino3d.pruning)
prune_columns, refit_columns one-shot transform-aware pruning with least-squares refit
column_cost                 per-stage work of a kept column set (pywino3d._choice.columns)
pywino3d.torch              nn.Module layers (optional extra "torch")
pywino3d.autotune           measured algorithm choice with an on-disk cache
"""
from pywino3d._api import (
    channel_affine,
    conv3d,
    filter_transform,
    filter_transform_backward,
    winograd_conv3d,
    winograd_conv3d_backward,
)
from pywino3d._choice.columns import column_cost
from pywino3d._core.fusion import Epilogue, Prologue
from pywino3d._backends.dispatch import available_backends, get_backend, set_backend, use_backend
from pywino3d._info import show_versions
from pywino3d._core.transforms import winograd_matrices
from pywino3d.lowrank import LowRankWinograd
from pywino3d.pruning import (
    column_importance,
    cubic_density,
    magnitude_mask,
    prune_columns,
    refit_columns,
    select_columns,
    select_columns_global,
)
from pywino3d import testing  # noqa: E402  (public test helpers)
from pywino3d import autotune  # noqa: E402  (measured algorithm choice)

from pywino3d._core.version import __version__  # noqa: E402,F401

__all__ = [
    "channel_affine",
    "conv3d",
    "Epilogue",
    "Prologue",
    "filter_transform",
    "filter_transform_backward",
    "winograd_conv3d",
    "winograd_conv3d_backward",
    "winograd_matrices",
    "show_versions",
    "testing",
    "autotune",
    "available_backends",
    "get_backend",
    "set_backend",
    "use_backend",
    "LowRankWinograd",
    "column_importance",
    "select_columns",
    "select_columns_global",
    "cubic_density",
    "magnitude_mask",
    "prune_columns",
    "refit_columns",
    "column_cost",
]
