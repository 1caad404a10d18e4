"""Measure the rounding error of conv3d per tile size (docs/accuracy.md).

    python benchmarks/accuracy.py            # the published tables

Part 1: relative L1 error and max abs error against the float64 oracle for a
64-channel 3x3x3 layer (outputs ~ N(0, 1)), float32 and float64, m = 1..6.
Part 2: the calibration behind pywino3d.testing.AXIS_ERROR: cube root of
max |err| / (eps * (|x| star |w|)) for cubic kernels r = 1..7, tiles m = 1..8.
"""
import argparse

import numpy as np

import pywino3d
from pywino3d.testing import conv3d_reference, local_max


def part1(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, 64, 8, 16, 16))
    w = rng.standard_normal((64, 64, 3, 3, 3)) / np.sqrt(64 * 27)
    print("| tile | float32 rel. L1 | float32 max abs | float64 rel. L1 | float64 max abs |")
    print("|---|---|---|---|---|")
    for m in range(1, 7):
        cells = []
        for dt in (np.float32, np.float64):
            xd, wd = x.astype(dt), w.astype(dt)
            ref = conv3d_reference(xd, wd, padding=1)
            y = pywino3d.conv3d(xd, wd, padding=1, tile=m)
            cells += [f"{np.abs(y - ref).sum() / np.abs(ref).sum():.2e}", f"{np.abs(y - ref).max():.2e}"]
        name = "direct (m=1)" if m == 1 else f"F({m}^3, 3^3)"
        print(f"| {name} | " + " | ".join(cells) + " |")


def part2(seed=1, samples=2):
    rng = np.random.default_rng(seed)
    eps = np.finfo(np.float32).eps
    print("| r \\ m | " + " | ".join(str(m) for m in range(1, 9)) + " |")
    print("|---" * 9 + "|")
    for r in range(1, 8):
        row = []
        for m in range(1, 9):
            worst = 0.0
            for _ in range(samples):
                x = rng.standard_normal((1, 8, 10, 10, 10)).astype(np.float32)
                w = rng.standard_normal((4, 8, r, r, r)).astype(np.float32)
                y = pywino3d.conv3d(x, w, padding="same", tile=m)
                ref = conv3d_reference(x, w, padding="same")
                mag = local_max(conv3d_reference(np.abs(x), np.abs(w), padding="same"), [2 * m - 1] * 3)
                worst = max(worst, float((np.abs(y - ref) / mag).max() / eps))
            row.append(f"{worst ** (1 / 3):.2f}")
        print(f"| {r} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--part", type=int, choices=[1, 2], default=None)
    a = ap.parse_args()
    if a.part in (None, 1):
        part1()
    if a.part in (None, 2):
        print()
        part2()
