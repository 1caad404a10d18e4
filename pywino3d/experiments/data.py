"""Moving-digit video clips: small data sets where the time axis matters.

Two tasks, both built from scikit-learn's 1797 8x8 digit images placed on an
18x18 canvas for 8 frames, with random brightness, start position and noise:

``"digit-direction"``
    One digit moving right or left; label ``2 * digit + direction``
    (20 classes).  The digit is readable from any single frame.
``"opposite"``
    Two digits of different classes, one moving right and one moving left
    (one in the top half, one in the bottom half); label = the class of the
    digit moving right (10 classes).  Every single frame shows both digits, so
    the label needs the order of the frames: reversing time swaps the answer.

The images are split per ``seed`` into disjoint train / validation / test
sets (:func:`split_images`); clips are drawn from a split *without
replacement*: every (image, arrangement) pair at most once, where the
arrangement is the direction ("digit-direction") or which of the two digits
is on top ("opposite").  ``n=None`` takes every pair.
"""
from __future__ import annotations

import functools

import numpy as np

FRAMES, SIZE, NCLASS = 8, 18, 20
TASKS = {"digit-direction": 20, "opposite": 10}
N_IMAGES = 1797
_SPLITS = ("train", "val", "test")


@functools.lru_cache(maxsize=1)
def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    images, labels = d.images.astype(np.float32) / 16.0, d.target.astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def split_images(seed, *, n_val=200, n_test=300, n_images=N_IMAGES):
    """Disjoint train / validation / test image indices for one seed.

    Parameters
    ----------
    seed : int
        Seeds the permutation of the images.
    n_val, n_test : int
        Images held out for validation and test; the rest are for training.

    Returns
    -------
    dict with keys "train", "val", "test": sorted int arrays.

    Examples
    --------
    >>> from pywino3d.experiments.data import split_images
    >>> s = split_images(0)
    >>> len(s["train"]), len(s["val"]), len(s["test"])
    (1297, 200, 300)
    """
    if n_val < 0 or n_test < 1 or n_val + n_test >= n_images:
        raise ValueError(f"n_val, n_test: need 0 <= n_val, 1 <= n_test and n_val + n_test < {n_images}, "
                         f"got {n_val}, {n_test}")
    perm = np.random.default_rng([seed, 7]).permutation(n_images)
    return {"test": np.sort(perm[:n_test]), "val": np.sort(perm[n_test:n_test + n_val]),
            "train": np.sort(perm[n_test + n_val:])}


def moving_digits(n=None, *, seed=0, split="train", task="digit-direction", n_val=200, n_test=300,
                  frames=FRAMES, size=SIZE, noise=0.15, return_images=False):
    """Deterministic video clips of moving digits.

    Parameters
    ----------
    n : int or None
        Number of clips, drawn without replacement from the split's
        (image, arrangement) pairs; None takes all of them.
    seed : int
        Fixes everything: the image split, the pairs drawn, positions,
        brightness and noise.
    split : {"train", "val", "test"}
        Which images of :func:`split_images` (``seed``, ``n_val``, ``n_test``).
    task : {"digit-direction", "opposite"}
        See the module docstring.
    return_images : bool
        Also return the image index each label comes from.

    Returns
    -------
    x : ndarray float32, shape (n, 1, frames, size, size)
    y : ndarray int64, shape (n,)
        "digit-direction": ``2 * digit + direction`` (direction 0: moving
        right, 1: moving left); "opposite": the class of the digit moving right.
    images : ndarray int64, shape (n,), only with ``return_images``
        The image index each label comes from (for checking disjointness).

    Examples
    --------
    >>> from pywino3d.experiments.data import moving_digits
    >>> x, y = moving_digits(4, seed=0)
    >>> x.shape, y.dtype.name
    ((4, 1, 8, 18, 18), 'int64')
    >>> len(moving_digits(seed=0, split="test")[1])  # every test image x both directions
    600
    """
    if split not in _SPLITS:
        raise ValueError(f"split: expected one of {_SPLITS}, got {split!r}")
    if task not in TASKS:
        raise ValueError(f"task: expected one of {tuple(TASKS)}, got {task!r}")
    travel = frames - 1
    if size < 8 + travel or (task == "opposite" and size < 16):
        raise ValueError(f"size: {size} is too small for 8x8 digits travelling {travel} pixels")
    images, labels = _digits()
    pool = split_images(seed, n_val=n_val, n_test=n_test)[split]
    pairs = [(i, a) for i in pool for a in (0, 1)]
    if n is None:
        n = len(pairs)
    if not 0 < n <= len(pairs):
        raise ValueError(f"n: the {split} split has {len(pairs)} (image, arrangement) pairs, asked for {n}")
    rng = np.random.default_rng([seed, _SPLITS.index(split), list(TASKS).index(task)])
    chosen = [pairs[k] for k in rng.permutation(len(pairs))[:n]]
    x = np.zeros((n, 1, frames, size, size), np.float32)
    y = np.empty(n, np.int64)
    img_ids = np.empty(n, np.int64)

    def draw(i, img, direction, y0):
        x0 = rng.integers(0, size - 8 - travel + 1)
        im = images[img] * rng.uniform(0.7, 1.3)
        for t in range(frames):
            xs = x0 + (t if direction == 0 else travel - t)
            x[i, 0, t, y0:y0 + 8, xs:xs + 8] = np.maximum(x[i, 0, t, y0:y0 + 8, xs:xs + 8], im)

    for i, (img, a) in enumerate(chosen):
        img_ids[i] = img
        if task == "digit-direction":
            draw(i, img, a, rng.integers(0, size - 8 + 1))
            y[i] = 2 * labels[img] + a
        else:
            others = pool[labels[pool] != labels[img]]
            other = others[rng.integers(len(others))]
            half = size // 2
            top, bottom = rng.integers(0, half - 8 + 1), half + rng.integers(0, size - half - 8 + 1)
            draw(i, img, 0, top if a == 0 else bottom)       # the labelled digit moves right
            draw(i, other, 1, bottom if a == 0 else top)     # the other one moves left
            y[i] = labels[img]
    x += noise * rng.standard_normal(x.shape).astype(np.float32)
    return (x, y, img_ids) if return_images else (x, y)
