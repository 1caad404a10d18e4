"""The README's demo command runs and reports every algorithm."""
import io

import numpy as np

from pywino3d.__main__ import demo


def test_demo_on_small_layers():
    out = io.StringIO()
    rows = demo(repeat=1, workers=2, layers=(("tiny many-channel", 16, 24, (4, 6, 6)),
                                             ("tiny few-channel", 8, 8, (10, 10, 10))), out=out)
    text = out.getvalue()
    assert "tiny many-channel" in text and "tiny few-channel" in text
    names = [r[1] for r in rows]
    assert names.count("direct (tile=1)") == 2
    assert any(n.startswith("F(4^3) fused") for n in names)  # few channels run fused
    for _, alg, _, t, err in rows:
        assert t > 0
        if alg != "torch conv3d":
            assert err < 1e-3, (alg, err)
