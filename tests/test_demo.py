"""The README's demo command runs and reports every algorithm."""
import io

import numpy as np

from pywino3d.__main__ import demo


#: Largest absolute error accepted per algorithm (outputs ~ N(0, 1)): about
#: 3 times the float32 maximum errors of docs/accuracy.md's 64-channel layer
#: (direct 7.7e-7, F(2^3) 1.7e-6, F(4^3) 1.15e-4) or of these layers
#: (direct 2.3e-6, F(2^3) 7.8e-7, F(4^3) 4.7e-5), whichever is larger.
#: A kernel off by 0.3 % is off by about 1e-2 on the largest outputs.
MAX_ERROR = {"direct": 1e-5, "F(2^3)": 5e-6, "F(4^3)": 3.5e-4}


def test_demo_on_small_layers():
    out = io.StringIO()
    rows = demo(repeat=1, workers=2, layers=(("tiny many-channel", 16, 24, (4, 6, 6)),
                                             ("tiny few-channel", 8, 8, (10, 10, 10))), out=out)
    text = out.getvalue()
    assert "tiny many-channel" in text and "tiny few-channel" in text
    names = [r[1] for r in rows]
    assert names.count("direct (tile=1)") == 2
    assert any(n.startswith("F(4^3) fused") for n in names)  # few channels run fused
    checked = 0
    for _, alg, _, t, err in rows:
        assert t > 0
        if alg != "torch conv3d":
            assert err < MAX_ERROR[alg.split()[0]], (alg, err)
            checked += 1
    assert checked == 14  # direct and F(2^3), F(4^3) at 3 densities, on 2 layers
