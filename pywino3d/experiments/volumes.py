"""Noisy 3-D volumes of tall and flat ellipsoids: a segmentation task that needs depth.

A harder variant of :func:`monai.data.create_test_image_3d` (noisy spheres on
a dark background): every object is an ellipsoid with a round cross-section
of radius ``r`` in the (height, width) plane and a semi-axis ``c`` along
depth; the class says only how far it extends along depth:

* class 1, "tall": ``c`` between 1.6 ``r`` and 2.2 ``r``;
* class 2, "flat": ``c`` between 0.45 ``r`` and 0.7 ``r``;
* class 0: background.

Both classes have the same brightness distribution, so a single
(height, width) slice shows a disk of some radius in both cases: a 2-D model
sees a tall object's off-centre slice and a flat object's centre slice
alike, and only the neighbouring slices tell them apart.

Splits are disjoint by construction: volume ``i`` of split ``s`` under seed
``k`` is drawn from the generator seeded ``[k, s, i]`` (``s`` = 0, 1, 2 for
train, validation, test), so the three splits use different generator
streams, and a new seed resamples all of them.
"""
from __future__ import annotations

import numpy as np

SHAPE = (32, 32, 32)  # depth, height, width
NCLASS = 3
CLASS_NAMES = ("background", "tall", "flat")
_SPLITS = ("train", "val", "test")


def _volume(rng, shape, n_objects, radius, noise):
    d, h, w = shape
    label = np.zeros(shape, np.int64)
    image = np.zeros(shape, np.float32)
    z, y, x = np.ogrid[:d, :h, :w]
    for _ in range(n_objects):
        cls = int(rng.integers(1, NCLASS))
        r = rng.uniform(*radius)
        c = r * (rng.uniform(1.6, 2.2) if cls == 1 else rng.uniform(0.45, 0.7))
        cz = rng.uniform(min(c, d / 2), max(d - c, d / 2))
        cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
        inside = ((z - cz) / c) ** 2 + ((y - cy) / r) ** 2 + ((x - cx) / r) ** 2 <= 1.0
        label[inside] = cls  # a later object covers an earlier one
        image[inside] = rng.uniform(0.6, 1.0)
    image += noise * rng.standard_normal(shape).astype(np.float32)
    return image, label


def ellipsoid_volumes(n, *, seed=0, split="train", shape=SHAPE, n_objects=(5, 9), radius=(2.5, 4.5),
                      noise=0.35):
    """Deterministic noisy volumes of tall and flat ellipsoids with their labels.

    Parameters
    ----------
    n : int
        Number of volumes (>= 1).
    seed : int
        With ``split``, fixes every volume (see the module docstring).
    split : {"train", "val", "test"}
    shape : tuple of 3 ints
        (depth, height, width), each >= 16.
    n_objects : (int, int)
        Inclusive range of the number of objects per volume.
    radius : (float, float)
        Range of the in-plane radius ``r``.
    noise : float
        Standard deviation of the Gaussian noise added to the image.

    Returns
    -------
    x : ndarray float32, shape (n, 1, depth, height, width)
    y : ndarray int64, shape (n, depth, height, width), values in 0, 1, 2

    Examples
    --------
    >>> from pywino3d.experiments.volumes import ellipsoid_volumes
    >>> x, y = ellipsoid_volumes(2, seed=0, split="test")
    >>> x.shape, y.shape, sorted(set(y.ravel().tolist()))
    ((2, 1, 32, 32, 32), (2, 32, 32, 32), [0, 1, 2])
    """
    if split not in _SPLITS:
        raise ValueError(f"split: expected one of {_SPLITS}, got {split!r}")
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"shape: expected 3 extents >= 16, got {shape!r}")
    lo, hi = n_objects
    if not 1 <= lo <= hi:
        raise ValueError(f"n_objects: expected 1 <= low <= high, got {n_objects!r}")
    if not 0 < radius[0] <= radius[1] <= min(shape[1:]) / 4:
        raise ValueError(f"radius: expected 0 < low <= high <= {min(shape[1:]) / 4}, got {radius!r}")
    if noise < 0:
        raise ValueError(f"noise: expected >= 0, got {noise!r}")
    x = np.empty((n, 1) + shape, np.float32)
    y = np.empty((n,) + shape, np.int64)
    s = _SPLITS.index(split)
    for i in range(n):
        rng = np.random.default_rng([seed, s, i])
        x[i, 0], y[i] = _volume(rng, shape, int(rng.integers(lo, hi + 1)), radius, noise)
    return x, y


def dice_scores(pred, target, nclass=NCLASS):
    """Per-volume, per-class Dice of label maps, by :class:`monai.metrics.DiceMetric`.

    Background (class 0) is left out.  A class absent from both the
    prediction and the target of a volume scores 1 (nothing to find, nothing
    found); absent from the target but predicted, 0.

    Parameters
    ----------
    pred, target : int arrays of shape (n, depth, height, width)

    Returns
    -------
    ndarray float64, shape (n, nclass - 1)

    Examples
    --------
    >>> import numpy as np
    >>> from pywino3d.experiments.volumes import dice_scores
    >>> y = np.zeros((1, 4, 4, 4), np.int64); y[0, :2] = 1; y[0, 2:, :2] = 2
    >>> dice_scores(y, y).tolist(), dice_scores(np.zeros_like(y), y).tolist()
    ([[1.0, 1.0]], [[0.0, 0.0]])
    """
    import torch
    from monai.metrics import DiceMetric

    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(f"pred, target: expected equal shapes (n, d, h, w), got {pred.shape} and {target.shape}")
    if not np.issubdtype(pred.dtype, np.integer) or not np.issubdtype(target.dtype, np.integer):
        raise ValueError("pred, target: expected integer label maps")

    def onehot(a):
        return torch.nn.functional.one_hot(torch.from_numpy(a.astype(np.int64)), nclass).permute(0, 4, 1, 2, 3)

    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=False)
    return metric(onehot(pred), onehot(target)).double().numpy()
