"""Moving-digit video clips: a small data set where the time axis matters."""
from __future__ import annotations

import numpy as np

FRAMES, SIZE, NCLASS = 8, 18, 20


def moving_digits(n, *, seed=0, split="train", frames=FRAMES, size=SIZE, noise=0.15):
    """Deterministic video clips of moving digits.

    Parameters
    ----------
    n : int
        Number of clips.
    seed : int
        Fixes everything: digit choice, start position, direction, noise.
    split : {"train", "test"}
        Digit images 0..1399 for train, 1400..1796 for test.

    Returns
    -------
    x : ndarray float32, shape (n, 1, frames, size, size)
    y : ndarray int64, shape (n,), label = 2 * digit + direction
        (direction 0: moving right, 1: moving left).

    Examples
    --------
    >>> from pywino3d.experiments.data import moving_digits
    >>> x, y = moving_digits(4, seed=0)
    >>> x.shape, y.dtype.name
    ((4, 1, 8, 18, 18), 'int64')
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    labels = digits.target.astype(np.int64)
    idx = np.arange(0, 1400) if split == "train" else np.arange(1400, len(images))
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    pick = rng.choice(idx, size=n, replace=True)
    direction = rng.integers(0, 2, size=n)
    travel = frames - 1
    x = np.zeros((n, 1, frames, size, size), np.float32)
    for i in range(n):
        img = images[pick[i]] * rng.uniform(0.7, 1.3)
        x0 = rng.integers(0, size - 8 - travel + 1)
        y0 = rng.integers(0, size - 8 + 1)
        for t in range(frames):
            xs = x0 + (t if direction[i] == 0 else travel - t)
            x[i, 0, t, y0:y0 + 8, xs:xs + 8] = img
    x += noise * rng.standard_normal(x.shape).astype(np.float32)
    return x, 2 * labels[pick] + direction
