"""Accuracy regression: relative L1 error of float32 F(m^3, 3^3) on fixed
problems stays within 1.5x of the values published in docs/accuracy.md.

The property tests use a rigorous componentwise bound, which catches wrong
results for any input but is loose for large tiles; this test pins the
typical accuracy, so a subtle loss (a badly rounded matrix, a worse point
set or scaling) fails here."""
import numpy as np
import pytest

import pywino3d
from pywino3d.testing import conv3d_reference

from conftest import BACKENDS, host, on

#: measured with seed 0 (seeds 1 and 2 agree within 5 %)
# tile 1 on the CPU is the direct kernel: one chain of C * 27 FMAs per output
# (3.0e-7; torch's oneDNN 2.1e-7 on this problem); the CUDA backend's F(1, r)
# sums per position first (9.5e-8) and passes the same bounds.
# F(4^3) and F(5^3) measured again with the searched points of alpha 6 and 7
# (issue 30; before: 2.41e-06 and 4.51e-06; F(5^3) 3.51e-06 with the first
# searched set 0, +-5/9, +-9/8, 8/3, 2.29e-06 with +-2/7, +-6/7, +-7/4).
REL_L1 = {1: 3.03e-07, 2: 2.27e-07, 3: 1.16e-06, 4: 1.02e-06, 5: 2.29e-06, 6: 6.94e-06}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("m", sorted(REL_L1))
def test_float32_relative_error(backend, m):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 16, 8, 12, 12)).astype(np.float32)
    w = (rng.standard_normal((16, 16, 3, 3, 3)) / np.sqrt(16 * 27)).astype(np.float32)
    ref = conv3d_reference(x, w, padding=1)
    y = host(pywino3d.conv3d(on(backend, x), on(backend, w), padding=1, tile=m))
    err = np.abs(y - ref).sum() / np.abs(ref).sum()
    assert err <= 1.5 * REL_L1[m], f"relative L1 error {err:.3g} > 1.5 x {REL_L1[m]:.3g}"
    assert err >= 0.2 * REL_L1[m], "suspiciously exact: is the float32 path really float32?"
